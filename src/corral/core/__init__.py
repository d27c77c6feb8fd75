"""Pure decision logic: snapshot + now -> decisions. No I/O, no clock reads."""
