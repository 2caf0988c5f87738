"""`edgefed predict --model FILE.tflite --input FILE.npy`: classify with the lightest TFLite interpreter.

Also installed as `edgefed-predict` (and runnable as `python -m edgefed.commands.predict`): in the Pi
inference environment (NumPy < 2, tflite-runtime, edgefed installed --no-deps) the rest of the CLI's
dependencies are absent, so this entry point imports nothing but edgefed.lite.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from edgefed.lite import BACKENDS, InferenceError, predict_file

# Where a worker keeps the last good model the chief sent (edgefed.federation.model_push.MODEL_FILE,
# not imported: this entry point loads nothing but edgefed.lite).
RECEIVED_MODEL = Path("model") / "federated.tflite"
DEFAULT_STATE_DIR = "/var/lib/edgefed"


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model", help=".tflite file (a manifest.json beside it supplies the labels); default: the model this "
        "worker last received from the chief, STATE_DIR/" + str(RECEIVED_MODEL),
    )
    parser.add_argument("--state-dir", default=DEFAULT_STATE_DIR,
                        help=f"the node's state directory, for the received model (default {DEFAULT_STATE_DIR})")
    parser.add_argument("--input", help=".npy array: one example, or N examples along axis 0 (required unless --serve)")
    parser.add_argument(
        "--serve", action="store_true",
        help="answer JSON lines on stdin ({\"input\": [...]}) with label and probabilities on stdout, "
        "reloading the model when it is replaced (the edgefed-infer unit; docs/tflite.md)",
    )
    parser.add_argument(
        "--interpreter", choices=("auto", *BACKENDS), default="auto",
        help="TFLite interpreter (default: the first installed of " + ", ".join(BACKENDS) + ")",
    )
    parser.add_argument("--threads", type=int, default=None, help="interpreter threads (default: its own)")
    parser.add_argument("--json", action="store_true", help="one JSON document on stdout")
    parser.set_defaults(handler=run)


def register(subcommands: Any) -> None:
    parser = subcommands.add_parser("predict", help="classify an .npy array with an exported .tflite model")
    _add_arguments(parser)


def run(args: argparse.Namespace) -> int:
    if args.threads is not None and args.threads < 1:
        raise InferenceError(f"--threads: must be >= 1, got {args.threads}")
    model = Path(args.model) if args.model else Path(args.state_dir) / RECEIVED_MODEL
    if not args.model and not model.is_file() and not args.serve:
        raise InferenceError(f"{model}: no model received from the chief yet (federation.push_model); "
                             "or give --model FILE.tflite")
    if args.serve:
        from edgefed.lite_serve import serve

        return serve(model, backend=args.interpreter, num_threads=args.threads)
    if not args.input:
        raise InferenceError("--input FILE.npy is required (or --serve)")
    result = predict_file(model, args.input, backend=args.interpreter, num_threads=args.threads)
    if args.json:
        print(json.dumps(result.to_json()))
        return 0
    print(f"interpreter: {result.backend}; labels: {result.manifest_note}", file=sys.stderr)
    names = result.labels or [str(c) for c in result.classes]
    for index, (cls, name) in enumerate(zip(result.classes, names, strict=True)):
        print(f"{index}\t{cls}\t{name}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="edgefed-predict", description="Classify an .npy array with an exported .tflite model."
    )
    _add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        return run(args)
    except InferenceError as exc:
        print(f"edgefed: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
