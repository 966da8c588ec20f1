"""Dataset readers, official-protocol crops, and the Lightning data plumbing built on them."""
