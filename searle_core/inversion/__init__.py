"""What inversion reads and writes around the method: concepts and their files, phrase banks, nearest
words, φ's checkpoint files and the authors' released φ."""
