"""Where a sweep lives: the sweep dir (the one owner of its layout and readers) and its mirror on object
storage."""
