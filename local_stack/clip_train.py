"""The demo CLIP: the small `write_random_clip` architecture trained on easy-vqa's shape images.

Captions come from easy-vqa's questions and answers ("a red circle": 8 colours x 3 shapes). Training is contrastive,
seeded and run on a fixed CPU thread count, so a rerun gives byte-identical weights; the result is saved with
`save_pretrained` and loads through `ClipEncoder` by the same code as real CLIP.
Run: ``python -m local_stack.clip_train --out DIR [--epochs N]`` or ``mmrag models train-clip --out DIR``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mmrag.clip import ClipEncoder, clip_model_id, write_random_clip

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image
    from transformers import CLIPModel

COLOURS = ("black", "blue", "brown", "gray", "green", "red", "teal", "yellow")
SHAPES = ("circle", "rectangle", "triangle")
SPLITS = ("train", "test")
REPORT_FILE = "train_report.json"
_NEGATIONS = frozenset({"no", "not"})
_LEARNING_RATE = 1e-3
_WEIGHT_DECAY = 0.1

Captioned = list[tuple[Path, str]]


def _known_words(question: str, answer: str) -> set[str]:
    """Colour/shape words that one question and its answer say the image has."""
    words = question.rstrip("?").split()
    named = {word for word in words if word in COLOURS or word in SHAPES}
    if answer in ("yes", "no"):
        # "is there not a red shape?" -> "no" asserts red just like "is there a red shape?" -> "yes"
        asserted = (answer == "yes") != any(word in _NEGATIONS for word in words)
        return named if asserted else set()
    return named | {answer}


def _caption(words: set[str]) -> str | None:
    colours = [word for word in COLOURS if word in words]
    shapes = [word for word in SHAPES if word in words]
    if len(colours) != 1 or len(shapes) != 1:
        return None
    return f"a {colours[0]} {shapes[0]}"


def _captioned(split: str) -> tuple[Captioned, int]:
    import easy_vqa

    if split not in SPLITS:
        raise ValueError(f"easy-vqa split {split!r} is not one of {SPLITS}")
    questions = easy_vqa.get_train_questions() if split == "train" else easy_vqa.get_test_questions()
    paths = easy_vqa.get_train_image_paths() if split == "train" else easy_vqa.get_test_image_paths()
    known: dict[int, set[str]] = defaultdict(set)
    for question, answer, image_id in zip(*questions, strict=True):
        known[image_id] |= _known_words(question, answer)
    pairs = []
    for image_id in sorted(paths):
        caption = _caption(known[image_id])
        if caption is not None:
            pairs.append((Path(paths[image_id]), caption))
    return pairs, len(paths) - len(pairs)


def captions_from_easy_vqa(split: str) -> Captioned:
    """(image path, "a <colour> <shape>") for every image of `split` ("train"/"test") whose questions name exactly one
    colour and one shape, in image-id order; the others are skipped (see `train_report.json`'s counts).

    Raises ValueError for an unknown split.
    """
    return _captioned(split)[0]


def _load_images(pairs: Captioned) -> list[Image]:
    from PIL import Image as PILImage

    images = []
    for path, _ in pairs:
        with PILImage.open(path) as image:
            images.append(image.convert("RGB"))
    return images


def _recalls(model_dir: Path, pairs: Captioned, images: list[Image], ks: Sequence[int]) -> dict[int, float]:
    encoder = ClipEncoder(model_dir, device="cpu")
    encoder.warm_up()
    captions = sorted({caption for _, caption in pairs})
    scores = encoder.encode_texts(captions) @ encoder.encode_images(images).T
    ranked = np.argsort(-scores, axis=1, kind="stable")
    labels = np.array([caption for _, caption in pairs])
    hits = labels[ranked] == np.array(captions)[:, None]
    return {k: float(hits[:, :k].any(axis=1).mean()) for k in ks}


def recall_at_k(model_dir: Path, split: str = "test", k: int = 5) -> float:
    """Text->image recall@k on easy-vqa's `split`: each distinct caption queries the split's captioned images ranked
    by cosine; a hit when any of the top k has that caption; the mean over captions. Chance is about k / 24.

    Raises ValueError when `model_dir` holds no model or the split is unknown.
    """
    pairs = captions_from_easy_vqa(split)
    return _recalls(model_dir, pairs, _load_images(pairs), [k])[k]


def _batches(groups: list[torch.Tensor], steps: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """One image index per caption, in caption order: no caption repeats within a batch, so no false negatives."""
    import torch

    orders = [group[torch.randperm(len(group), generator=generator)] for group in groups]
    for step in range(steps):
        yield torch.stack([order[step % len(order)] for order in orders])


def _fit(init_dir: Path, pairs: Captioned, epochs: int, seed: int, progress: bool) -> tuple[CLIPModel, float]:
    """Train the model saved in `init_dir` in place; returns it and the last epoch's mean loss."""
    import torch
    from transformers import AutoProcessor, CLIPModel

    model = CLIPModel.from_pretrained(init_dir)
    processor = AutoProcessor.from_pretrained(init_dir)
    captions = sorted({caption for _, caption in pairs})
    text = processor.tokenizer(captions, padding=True, truncation=True, return_tensors="pt")
    pixels = processor.image_processor(_load_images(pairs), return_tensors="pt")["pixel_values"]
    groups = [torch.tensor([i for i, (_, c) in enumerate(pairs) if c == caption]) for caption in captions]
    optimizer = torch.optim.AdamW(model.parameters(), lr=_LEARNING_RATE, weight_decay=_WEIGHT_DECAY)
    generator = torch.Generator().manual_seed(seed)
    steps, started, mean_loss = len(pairs) // len(captions), time.monotonic(), float("nan")
    model.train()
    for epoch in range(1, epochs + 1):
        total = 0.0
        for batch in _batches(groups, steps, generator):
            loss = model(**text, pixel_values=pixels[batch], return_loss=True).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        mean_loss = total / steps
        if progress:
            elapsed = time.monotonic() - started
            print(f"epoch {epoch}/{epochs}  loss {mean_loss:.4f}  {elapsed:.1f}s", file=sys.stderr, flush=True)
    return model.eval(), mean_loss


def _train_and_save(out_dir: Path, train: Captioned, epochs: int, seed: int, progress: bool) -> dict[str, Any]:
    """Write the seeded random init, train it, save into `out_dir`; returns the random init's test recalls too."""
    from transformers import AutoProcessor

    test = captions_from_easy_vqa("test")
    test_images = _load_images(test)
    with tempfile.TemporaryDirectory(prefix="clip-init-") as scratch:
        init_dir = write_random_clip(Path(scratch) / out_dir.name, seed, corpus=[c for _, c in train])
        random_init = _recalls(init_dir, test, test_images, (1, 5))
        started = time.monotonic()
        model, loss = _fit(init_dir, train, epochs, seed, progress)
        seconds = time.monotonic() - started
        model.save_pretrained(out_dir)
        AutoProcessor.from_pretrained(init_dir).save_pretrained(out_dir)
    trained = _recalls(out_dir, test, test_images, (1, 5))
    return {
        "seconds": round(seconds, 1),
        "final_loss": round(loss, 4),
        "test_images": len(test),
        "trained": {"recall@1": trained[1], "recall@5": trained[5]},
        "random_init": {"recall@1": random_init[1], "recall@5": random_init[5]},
    }


def train_clip(out_dir: Path, *, epochs: int = 10, seed: int = 0, threads: int = 2, progress: bool = True) -> dict:
    """Train the demo CLIP on easy-vqa's train split into `out_dir` (model + tokenizer + image processor) and write
    `train_report.json` there: epochs, seed, threads, training seconds, test recall@1/@5 of the trained model and of
    the same-shape random init. Same seed and threads -> identical weights. Returns the report.

    Raises ValueError for epochs < 1 or threads < 1. torch's thread count is restored afterwards.
    """
    import torch

    if epochs < 1 or threads < 1:
        raise ValueError(f"train_clip needs epochs >= 1 and threads >= 1, got epochs={epochs} threads={threads}")
    started = time.monotonic()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / REPORT_FILE).unlink(missing_ok=True)  # the report marks a finished model: never beside a partial one
    train, skipped = _captioned("train")
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        outcome = _train_and_save(out_dir, train, epochs, seed, progress)
    finally:
        torch.set_num_threads(previous_threads)
    report = {"epochs": epochs, "seed": seed, "threads": threads, "model_id": clip_model_id(out_dir)}
    report |= {"train_images": len(train), "train_images_skipped": skipped, **outcome}
    report["total_seconds"] = round(time.monotonic() - started, 1)
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2) + "\n")
    return report


def _cached_report(out_dir: Path, epochs: int, seed: int, threads: int) -> dict | None:
    """The report of a finished model in `out_dir` trained with these settings and unchanged since, else None."""
    report_path = out_dir / REPORT_FILE
    if not report_path.is_file():
        return None
    report = json.loads(report_path.read_text())
    if (report.get("epochs"), report.get("seed"), report.get("threads")) != (epochs, seed, threads):
        return None
    try:
        current_id = clip_model_id(out_dir)
    except ValueError:
        return None
    return report if report.get("model_id") == current_id else None


def _cmd_train(args: argparse.Namespace) -> int:
    cached = None if args.force else _cached_report(args.out, args.epochs, args.seed, args.threads)
    if cached is not None:
        print(f"{args.out} already holds this model (see {REPORT_FILE}); --force retrains", file=sys.stderr)
    report = cached or train_clip(args.out, epochs=args.epochs, seed=args.seed, threads=args.threads)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_init(args: argparse.Namespace) -> int:
    out_dir = write_random_clip(args.out, seed=args.seed, full_size=args.full_size)
    print(f"random-init CLIP {clip_model_id(out_dir)} written to {out_dir}")
    return 0


def _add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, required=True, help="directory to save the model into")
    parser.add_argument("--epochs", type=int, default=10, help="passes over the train split (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the init and the batch order (default 0)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads; part of the result (default 2)")
    parser.add_argument("--force", action="store_true", help="retrain even when --out holds a matching model")
    parser.set_defaults(func=_cmd_train)


def register_cli(parser: argparse.ArgumentParser) -> None:
    """Add the init-clip/train-clip subcommands to `parser`; each sets `func(args) -> exit code`."""
    sub = parser.add_subparsers(dest="models_command", required=True)
    init = sub.add_parser("init-clip", help="write a small random-init CLIP (for tests and wiring)")
    init.add_argument("--out", type=Path, required=True, help="directory to save the model into")
    init.add_argument("--seed", type=int, default=0, help="init seed (default 0)")
    init.add_argument("--full-size", action="store_true", help="ViT-B/32 shape (~600 MB) for throughput benchmarks")
    init.set_defaults(func=_cmd_init)
    _add_train_arguments(sub.add_parser("train-clip", help="train the demo CLIP on easy-vqa (~2 min on 2 cores)"))


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m local_stack.clip_train`; trains unless --out already holds the same model."""
    parser = argparse.ArgumentParser(prog="python -m local_stack.clip_train", description=__doc__)
    _add_train_arguments(parser)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
