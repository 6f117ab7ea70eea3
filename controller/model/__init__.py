"""Plain typed state both sides speak: keys, observed objects, host capabilities."""
