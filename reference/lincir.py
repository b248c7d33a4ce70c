"""The official LinCIR code (navervision/lincir), restated without any of the project's code.

``loader.py``'s ``clean_caption``, ``extract_keywords_spacy`` and the masking loop of ``CaptionDataset.__getitem__``,
``train_phi.py``'s argparse defaults and ``models.Phi``'s dropout, and ``validate.py``'s query features
(``extract_pseudo_tokens_with_phi`` then ``cirr_generate_val_predictions``). The tests in ``test_lincir.py``
compare the project against these; nothing here computes a result.
"""

from __future__ import annotations

import random

import torch
import torch.nn.functional as F

#: ``train_phi.py``'s argparse defaults (``--learning_rate``, ``--weight_decay``, ``--phi_dropout``, ...).
OFFICIAL_ARGS = {"learning_rate": 1e-4, "weight_decay": 0.01, "phi_dropout": 0.5, "batch_size": 256}
#: The README's training command: 8 processes × ``--batch_size 64``, ``--max_train_steps 20000``, fp16.
README_RUN = {"batch_size": 8 * 64, "max_train_steps": 20_000, "mixed_precision": "fp16"}
OFFICIAL_PROMPT = "a photo of $ that {}"


def official_clean_caption(caption, encode, decode) -> str:
    """``clean_caption``: ``encode`` is the tokenizer's ids with start and end tokens, ``decode`` their text."""
    if caption is None:
        caption = ""
    if "<PERSON>" in caption:  # to handle with GCC12M
        caption = caption.replace("<PERSON>", "person")
    caption = caption.lower().replace("$", "").strip()
    tokens = encode(caption)
    if len(tokens) > 77:
        caption = decode(tokens[1:76])
    return caption


def official_keywords(spacy_nlp, caption: str) -> list[str]:
    """``extract_keywords_spacy``."""
    sequences, current_sequence = [], []
    for token in spacy_nlp(caption):
        if token.pos_ in ["NOUN", "PROPN", "ADJ", "DET"]:
            current_sequence.append(token.text)
        elif current_sequence:
            sequences.append(" ".join(current_sequence))
            current_sequence = []
    if current_sequence:
        sequences.append(" ".join(current_sequence))
    return sequences


def official_masked_caption(caption: str, spacy_nlp, rng: random.Random, extract=official_keywords) -> str:
    """The masking loop of ``CaptionDataset.__getitem__`` on a cleaned caption, ``[$]`` as theirs."""
    keywords = [""]
    try:
        keywords = extract(spacy_nlp, caption)
    except Exception:
        pass
    replaced_caption = caption
    if len(keywords) == 0:
        keywords = [""]
    for keyword in keywords:
        if keyword != "" and keyword in caption:
            replaced_caption = replaced_caption.replace(keyword, "[$]")
        else:
            tmp_keywords = caption.split(" ")
            if len(tmp_keywords) > 0:
                for selected_keyword in rng.sample(tmp_keywords, k=min(int(len(tmp_keywords) * 1.0), 1)):
                    replaced_caption = replaced_caption.replace(selected_keyword, "[$]")
            else:
                replaced_caption = f"a photo of [$] that {caption}"
            break
    return replaced_caption


@torch.no_grad()
def official_query_features(model, tokenize, phi, images, captions, dollar: int = 259, prompt: str = OFFICIAL_PROMPT):
    """``validate.py``'s query features on an open_clip model: φ of the raw (unnormalised) image embeddings,
    ``a photo of $ that {caption}`` with φ's token in the ``$`` row, EOT pooling, projection, then normalised."""
    tokens = phi(model.encode_image(images))
    text = tokenize([prompt.format(c) for c in captions])
    x = model.token_embedding(text)
    rows, cols = (text == dollar).nonzero(as_tuple=True)
    x[rows, cols] = tokens[rows].to(x.dtype)
    x = model.ln_final(model.transformer(x + model.positional_embedding, attn_mask=model.attn_mask))
    return F.normalize(x[torch.arange(len(text)), text.argmax(dim=-1)] @ model.text_projection, dim=-1)


def official_clip_preprocess(dim: int):
    """CLIP's processor as the official evaluation uses it: RGB, shortest side to ``dim`` (bicubic), centre crop."""
    from torchvision.transforms import CenterCrop, Compose, InterpolationMode, Normalize, Resize, ToTensor

    from reference.authors import MEAN, STD

    resize = Resize(dim, interpolation=InterpolationMode.BICUBIC)
    return Compose([lambda im: im.convert("RGB"), resize, CenterCrop(dim), ToTensor(), Normalize(MEAN, STD)])


#: ``loader.build_loader``'s caption sets, each read as ``datasets.load_dataset(name)["train"]["text"]``.
OFFICIAL_CORPORA = (
    "dangne/gcc_caption_only",
    "FredZhang7/stable-diffusion-prompts-2.47M",
    "Geonmo/midjourney-prompts-only",
)
