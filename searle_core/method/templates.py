"""The 24 prompt templates of OTI's cosine loss and of concept embedding (PALAVRA's set)."""

TEMPLATES: tuple[str, ...] = (
    "This is a photo of a {}",
    "This photo contains a {}",
    "A photo of a {}",
    "This is an illustration of a {}",
    "This illustration contains a {}",
    "An illustrations of a {}",
    "This is a sketch of a {}",
    "This sketch contains a {}",
    "A sketch of a {}",
    "This is a diagram of a {}",
    "This diagram contains a {}",
    "A diagram of a {}",
    "A {}",
    "We see a {}",
    "{}",
    "We see a {} in this photo",
    "We see a {} in this image",
    "We see a {} in this illustration",
    "We see a {} photo",
    "We see a {} image",
    "We see a {} illustration",
    "{} photo",
    "{} image",
    "{} illustration",
)

PSEUDO = "$"


def fill(template: str, word: str) -> str:
    """Put a word (or ``$``) into a template."""
    return template.format(word)
