"""Command line: ``python -m ple_runtime export|verify|inspect``.

    python -m ple_runtime export MODEL OUT.ple [--dtype f16] [--task-names ctr,cvr] [--max-len hist=20]
                                               [--name NAME] [--state-dict W.pt] [--verify]
    python -m ple_runtime verify MODEL FILE.ple [--inputs DIR] [--batch 1024] [--tolerance T]
    python -m ple_runtime inspect FILE.ple [--no-verify-data] [--native]

MODEL (a torch-rechub / DeepCTR-Torch model) is either
  * a file written with ``torch.save(model, path)`` (the whole module object; it is
    unpickled with ``weights_only=False``, so only load files you trust), or
  * ``package.module:attr``: an ``nn.Module`` object, or a callable that returns one when
    called without arguments (a factory that builds the model and loads its weights); the
    current directory is on the import path.
``--state-dict W.pt`` then loads ``torch.save(model.state_dict(), W.pt)`` weights into it.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from .format import FormatError, describe, read_header_and_meta


def load_torch_model(spec: str, state_dict: str | None = None):
    """The torch model named by ``spec`` (a torch.save file or ``module:attr``), in eval mode."""
    import torch

    from .export_torch import import_deepctr_offline

    import_deepctr_offline()
    if ":" in spec and not os.path.exists(spec):
        module, _, attr = spec.partition(":")
        if os.getcwd() not in sys.path:
            sys.path.insert(0, os.getcwd())
        obj = importlib.import_module(module)
        for part in attr.split("."):
            obj = getattr(obj, part)
        if not isinstance(obj, torch.nn.Module) and callable(obj):
            obj = obj()
    else:
        obj = torch.load(spec, map_location="cpu", weights_only=False)
    if not isinstance(obj, torch.nn.Module):
        hint = (" (it looks like a state_dict: give the model as module:factory and the weights with --state-dict)"
                if isinstance(obj, dict) else "")
        raise SystemExit(f"{spec}: not a torch nn.Module but a {type(obj).__name__}{hint}")
    if state_dict:
        weights = torch.load(state_dict, map_location="cpu", weights_only=False)
        if isinstance(weights, torch.nn.Module):
            weights = weights.state_dict()
        obj.load_state_dict(weights)
    return obj.eval()


def _max_len(text: str | None):
    if not text:
        return None
    if "=" not in text:
        return int(text)
    out = {}
    for item in text.split(","):
        name, _, value = item.partition("=")
        out[name.strip()] = int(value)
    return out


def _export(args) -> int:
    from . import export_torch
    from .verify import verify

    model = load_torch_model(args.model, args.state_dict)
    kwargs = {"name": args.name, "max_len": _max_len(args.max_len)}
    if args.task_names:
        kwargs["task_names"] = [n.strip() for n in args.task_names.split(",")]
    try:
        pf = export_torch.export(model, args.out, dtype=args.dtype, **kwargs)
    except (export_torch.ExportError, ValueError) as exc:
        print(f"export: {exc}", file=sys.stderr)
        return 1
    size = os.path.getsize(args.out)
    print(f"wrote {args.out}: {pf.name!r}, {len(pf.features)} inputs, outputs "
          f"{[o.name for o in pf.outputs]}, {args.dtype}, {size / 1024:.1f} KiB")
    if args.verify:
        report = verify(model, args.out, batch=args.batch, raise_on_failure=False)
        return 0 if report.ok else 2
    return 0


def _verify(args) -> int:
    from .model import Model
    from .verify import load_inputs, verify

    model = load_torch_model(args.model, args.state_dict)
    inputs = None
    if args.inputs:
        with Model(args.file) as m:
            inputs = load_inputs(args.inputs, m)
    report = verify(model, args.file, inputs, batch=args.batch, tolerance=args.tolerance, seed=args.seed,
                    raise_on_failure=False)
    return 0 if report.ok else 2


def _inspect(args) -> int:
    try:
        pf = read_header_and_meta(args.path, verify_data=not args.no_verify_data)
    except (OSError, FormatError) as exc:
        print(f"{args.path}: {exc}", file=sys.stderr)
        return 1
    print(describe(pf))
    if args.native:
        from . import _native
        from .model import Model, PleError

        try:
            with Model(args.path, verify_data=not args.no_verify_data) as m:
                print(f"\nlibple {_native.version()} ({_native.lib_path()}):")
                print(m.describe())
        except (PleError, OSError) as exc:
            print(f"{args.path}: libple: {exc}", file=sys.stderr)
            return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ple_runtime", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    exp = sub.add_parser("export", help="write a torch-rechub / DeepCTR-Torch model as a .ple file")
    exp.add_argument("model", help="torch.save'd model file, or module:attr (a model or a factory)")
    exp.add_argument("out", help="the .ple file to write")
    exp.add_argument("--dtype", choices=("f32", "f16"), default="f32", help="weight storage (default f32)")
    exp.add_argument("--name", help="model name stored in the file (default <library>.<class>)")
    exp.add_argument("--task-names", help="comma-separated output names (default: the model's)")
    exp.add_argument("--max-len", help="torch-rechub sequence bounds: L for all, or name=L,name=L "
                     "(default 256 for sequences with a padding_idx)")
    exp.add_argument("--state-dict", help="load these weights (torch.save(model.state_dict())) into MODEL first")
    exp.add_argument("--verify", action="store_true", help="then verify the file against the model")
    exp.add_argument("--batch", type=int, default=1024, help="random inputs for --verify (default 1024)")
    exp.set_defaults(func=_export)

    ver = sub.add_parser("verify", help="score random (or given) inputs with the model and the file, compare")
    ver.add_argument("model", help="torch.save'd model file, or module:attr (a model or a factory)")
    ver.add_argument("file", help="the .ple file")
    ver.add_argument("--inputs", help="directory of in_<feature>.npy files (default: random valid inputs)")
    ver.add_argument("--batch", type=int, default=1024, help="number of random inputs (default 1024)")
    ver.add_argument("--seed", type=int, default=0)
    ver.add_argument("--tolerance", type=float, help="max relative error (default 1e-5; f16: 3x torch's own)")
    ver.add_argument("--state-dict", help="load these weights into MODEL first")
    ver.set_defaults(func=_verify)

    ins = sub.add_parser("inspect", help="validate a .ple file strictly and print a summary")
    ins.add_argument("path")
    ins.add_argument("--no-verify-data", action="store_true", help="skip the data CRC and padding checks")
    ins.add_argument("--native", action="store_true", help="also open it with libple and print its view")
    ins.set_defaults(func=_inspect)

    args = parser.parse_args(argv)
    return args.func(args)


def inspect_main() -> int:
    """Entry point of the ``ple-inspect FILE`` console script."""
    return main(["inspect", *sys.argv[1:]])


if __name__ == "__main__":
    sys.exit(main())
