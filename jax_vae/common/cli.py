"""The one command line of both packages: `python -m jax_vae ...` and `python -m torch_reference ...`.

Subcommands: train, evaluate, export, import, compare; each is an `add_<name>_command(subparsers,
framework)` function in COMMANDS that registers its flags and a handler `(args, framework) -> exit
code`; add one there to extend the CLI. The train flags of the run options are built from
options.TrainOptions. User errors (jax_vae.common.errors) print one line `error: ...` on stderr and
exit with their code, before writing anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import time
import typing
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypeVar

from jax_vae.common import backends
from jax_vae.common.config.options import EvalOptions, TrainOptions, thread_count
from jax_vae.common.config.presets import PRESETS, get_preset
from jax_vae.common.config.vae_config import VAEConfig, apply_overrides, from_dict
from jax_vae.common.data.catalog import INPUT_DIMS, VALID_DATASETS, canonical_name
from jax_vae.common.errors import RunError, UserError, one_line
from jax_vae.common.evaluation import evaluate_run, report_line
from jax_vae.common.reporting.compare import compare
from jax_vae.common.runs import folder as runs
from jax_vae.common.training.loop import train
from jax_vae.common.weights import sources
from jax_vae.common.weights.export import export
from jax_vae.common.weights.formats import FORMATS
from jax_vae.common.weights.importing import import_weights

Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"  # add_subparsers's
DEFAULT_PRESET = "stutz-rectangles"
NUMBER = re.compile(r"-(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?|-(inf|nan)", re.IGNORECASE)  # a negative number
_N = TypeVar("_N")  # the namespace parse_known_args fills


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors (`error: ...`, exit 2) instead of usage + error."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")

    # argparse.ArgumentParser's three overloads (typeshed), so callers keep their namespace's type.
    @typing.overload
    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: None = None
    ) -> tuple[argparse.Namespace, list[str]]: ...
    @typing.overload
    def parse_known_args(self, args: Iterable[str] | None, namespace: _N) -> tuple[_N, list[str]]: ...
    @typing.overload
    def parse_known_args(self, *, namespace: _N) -> tuple[_N, list[str]]: ...

    def parse_known_args(
        self, args: Iterable[str] | None = None, namespace: Any = None
    ) -> tuple[Any, list[str]]:
        """argparse reads `--lr -1e-3` as two flags (its negative-number rule misses exponents): a
        value-taking flag followed by a number is passed as `--lr=-1e-3` first."""
        args = list(sys.argv[1:] if args is None else args)
        takes_value = {
            flag
            for action in self._actions
            if action.nargs is None and not isinstance(action, argparse._StoreConstAction)
            for flag in action.option_strings
        }
        joined: list[str] = []
        for arg in args:
            if joined and joined[-1] in takes_value and NUMBER.fullmatch(arg):
                joined[-1] = f"{joined[-1]}={arg}"
            else:
                joined.append(arg)
        return super().parse_known_args(joined, namespace)


def add_option_flags(p: argparse.ArgumentParser) -> None:
    """One flag per TrainOptions field (default None: 'not given'): a bool that defaults to True is
    --no-<name>, one that defaults to False is --<name>; a Literal field gets its choices."""
    hints = typing.get_type_hints(TrainOptions)
    for f in dataclasses.fields(TrainOptions):
        flag, hint, help_ = f.name.replace("_", "-"), hints[f.name], f.metadata["help"]
        if hint is bool and f.default:
            p.add_argument(
                f"--no-{flag}",
                dest=f.name,
                action="store_const",
                const=False,
                default=None,
                help=f.metadata["off"],
            )
        elif hint is bool:
            p.add_argument(
                f"--{flag}", dest=f.name, action="store_const", const=True, default=None, help=help_
            )
        elif typing.get_origin(hint) is Literal:
            p.add_argument(f"--{flag}", dest=f.name, choices=typing.get_args(hint), help=help_)
        else:
            is_int = hint is int or int in typing.get_args(hint)  # int, int | None
            p.add_argument(f"--{flag}", dest=f.name, type=int if is_int else str, help=help_)


# ----------------------------------------------------------------------------------------- train
def add_train_command(sub: Subcommands, framework: str) -> None:
    p = sub.add_parser(
        "train",
        help="train a preset into a run folder (or --resume one)",
        description=f"Train a VAE preset with {framework}. Losses are reported per image "
        "(nats for Bernoulli presets).",
    )
    p.add_argument(
        "--preset",
        help=f"preset name (default {DEFAULT_PRESET}; on --resume, the run's): " + ", ".join(PRESETS),
    )
    p.add_argument(
        "--dataset",
        help=f"{VALID_DATASETS} (default: the preset's); npz:PATH / folder:PATH are your own images "
        "(docs/training.md#your-own-images), their size sets input_dim",
    )
    p.add_argument(
        "--test-fraction",
        type=float,
        help="your own data without x_test: the fraction held out as the test split, a fixed subset "
        "whatever the seed (default 0.1)",
    )
    length = p.add_mutually_exclusive_group()
    length.add_argument("--epochs", type=int, help="train for this many epochs")
    length.add_argument("--steps", type=int, help="train for this many steps instead of epochs")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (overrides the preset's)")
    p.add_argument("--seed", type=int, help="seed of init, eps, data order and binarization")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set latent_dim=2 (repeatable)",
    )
    p.add_argument("--out", help="run folder (default runs/<preset>-<framework>-<time>)")
    add_option_flags(p)
    p.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="JAX multi-process: address of process 0 ($JAX_COORDINATOR_ADDRESS); 'auto' on "
        "SLURM / Open MPI / Cloud TPU, where JAX detects all three",
    )
    p.add_argument(
        "--num-processes", type=int, help="JAX multi-process: number of processes ($JAX_NUM_PROCESSES)"
    )
    p.add_argument("--process-id", type=int, help="JAX multi-process: this process, 0..N-1 ($JAX_PROCESS_ID)")
    p.set_defaults(handler=cmd_train)


def parse_sets(pairs: Sequence[str]) -> dict[str, str]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise RunError(f"--set expects KEY=VALUE, got {pair!r}")
        out[key.strip()] = value.strip()
    return out


def resolve_config(args: argparse.Namespace, framework: str) -> tuple[VAEConfig, Path, TrainOptions]:
    """(config, run folder, options) from the flags; on --resume, the saved run fills what is not given."""
    if args.resume and not args.out:
        raise RunError("--resume needs --out RUN_DIR")
    if args.resume and args.init_from:
        raise RunError("--init-from starts a new run; --resume continues one from its checkpoint")
    saved = runs.read_run(Path(args.out)) if args.resume and args.out else None
    sets = parse_sets(args.set)
    try:
        if saved is not None and args.preset in (None, saved.get("preset")):
            base = from_dict(saved["config"])
        elif args.init_from:  # the file's preset (or its source's, or --preset), widths from the file
            named = get_preset(args.preset) if args.preset else None
            source = args.source or TrainOptions.source
            base = sources.load(args.init_from, source, named, keep={k.replace("-", "_") for k in sets})[1]
        else:
            base = get_preset(args.preset or DEFAULT_PRESET)
        overrides: dict[str, Any] = {}
        if args.dataset is not None:
            overrides["dataset"] = canonical_name(args.dataset)
        for key in ("batch_size", "lr", "seed", "steps", "test_fraction"):
            if getattr(args, key) is not None:
                overrides[key] = getattr(args, key)
        for flag in ("epochs", "steps"):
            if getattr(args, flag) is not None and getattr(args, flag) < 1:
                raise RunError(f"--{flag} must be >= 1, got {getattr(args, flag)}")
        if args.epochs is not None:
            overrides.update(epochs=args.epochs, steps=0)
        overrides.update(sets)
        cfg = apply_overrides(base, overrides)
        if cfg.dataset != base.dataset and "input_dim" not in sets and cfg.dataset in INPUT_DIMS:
            cfg = apply_overrides(cfg, {"input_dim": INPUT_DIMS[cfg.dataset]})
    except (KeyError, ValueError, TypeError) as err:
        raise RunError(err.args[0] if err.args else str(err)) from None
    defaults = TrainOptions()
    restored = {k: v for k, v in ((saved or {}).get("options") or {}).items() if k in defaults.persisted()}
    given = {
        f.name: getattr(args, f.name)
        for f in dataclasses.fields(TrainOptions)
        if getattr(args, f.name) is not None
    }
    opts = dataclasses.replace(defaults, **{**restored, **given})
    return cfg, Path(args.out) if args.out else default_run_dir(cfg, framework), opts


def default_run_dir(cfg: VAEConfig, framework: str) -> Path:
    """runs/<preset>-<framework>-s<seed>-<date>-<time>-<pid>[-<n>]: a parallel seed sweep (other seeds,
    other processes) never shares a folder; -<n> when the name exists."""
    base = Path("runs") / f"{cfg.name}-{framework}-s{cfg.seed}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


def start_distributed(args: argparse.Namespace, backend: backends.Backend, data_parallel: bool) -> None:
    """The distributed runtime of a multi-process data-parallel run (flags, else $JAX_COORDINATOR_ADDRESS
    etc.)."""
    flags = (args.coordinator, args.num_processes, args.process_id)
    if backend.start_distributed is None or not data_parallel:
        if any(v is not None for v in flags):
            raise RunError(
                "--coordinator, --num-processes and --process-id need "
                f"`{backends.command('jax')} train --data-parallel`"
            )
        return
    try:
        backend.start_distributed(*flags)
    except ValueError as err:
        raise RunError(str(err)) from None


def apply_threads(threads: str, framework: str) -> int:
    """The run's CPU thread count, set before the framework is imported: torch reads $OMP_NUM_THREADS
    (its trainer also calls torch.set_num_threads); XLA sizes its CPU pool from the CPUs the process
    may use (its thread flags do not, jax 0.10.2), so a JAX run keeps the first N. Once jax is imported
    (a caller in the same process), JAX keeps its pool."""
    n = thread_count(threads, framework)
    if framework == "torch" and "torch" not in sys.modules:
        os.environ["OMP_NUM_THREADS"] = str(n)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if framework == "jax" and "jax" not in sys.modules and n < len(cpus):
        os.sched_setaffinity(0, cpus[:n])
    return n


def cmd_train(args: argparse.Namespace, framework: str) -> int:
    cfg, out, opts = resolve_config(args, framework)
    apply_threads(opts.threads, framework)
    backend = backends.get(framework)
    start_distributed(args, backend, opts.data_parallel)
    summary = train(backend, cfg, out, opts, log=lambda line: print(line, file=sys.stderr, flush=True))
    print(runs.summary_line(summary))
    return 0


# -------------------------------------------------------------------------------------- evaluate
def add_evaluate_command(sub: Subcommands, framework: str) -> None:
    p = sub.add_parser(
        "evaluate",
        help="test negative ELBO and the IWAE-k log-likelihood estimate of a run",
        description="Score a checkpoint on its preset's test split: negative ELBO (k-sample "
        "reconstruction + analytic KL) and -log p(x) estimated with k importance "
        "samples (Burda et al.: k = 5000), both in nats per image. Dynamic-"
        "binarization presets score the test set binarized once with --seed's draw.",
    )
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument(
        "--run", help="run folder, its checkpoints/ folder, a params export or a .safetensors export"
    )
    what.add_argument(
        "--weights",
        metavar="FILE",
        help="a weight file in the layout of --source (a source's own checkpoint: docs/weights.md)",
    )
    p.add_argument(
        "--source",
        choices=sources.NAMES,
        default=sources.OWN,
        help="with --weights: its layout (default jax-vae: jax-vae's own files)",
    )
    p.add_argument(
        "--preset", help="with --weights: score it as this preset (default: the file's or source's)"
    )
    p.add_argument("--dataset", help="score on this dataset instead of the preset's (same image size)")
    p.add_argument("--k", type=int, default=5000, help="importance samples per image (default 5000)")
    p.add_argument(
        "--data-dir", help="folder with the IDX files ($JAX_VAE_DATA_DIR or ~/.cache/jax_vae/datasets)"
    )
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--batch-size", type=int, default=100, help="images per batch (default 100)")
    p.add_argument(
        "--chunk",
        type=int,
        help="samples decoded at once per image (default: 32768 // "
        "batch-size; PyTorch on CPU: 4096 // batch-size)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the importance samples (default 0)")
    p.add_argument("--num-images", type=int, help="only the first N test images (default: all)")
    p.add_argument("--out", help="JSON report path (default: <run>/evaluation-k<k>.json for a run folder)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, gpu or cuda")
    threads_help = next(f for f in dataclasses.fields(TrainOptions) if f.name == "threads").metadata["help"]
    p.add_argument("--threads", default="auto", help=threads_help)
    p.add_argument("--no-download", action="store_true", help="fail instead of downloading missing data")
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace, framework: str) -> int:
    for flag in ("k", "batch_size", "chunk", "num_images"):
        if getattr(args, flag) is not None and getattr(args, flag) < 1:
            raise RunError(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    opts = EvalOptions(
        k=args.k,
        step=args.step,
        batch_size=args.batch_size,
        chunk=args.chunk,
        seed=args.seed,
        num_images=args.num_images,
        data_dir=args.data_dir,
        download=not args.no_download,
        out=args.out,
        device=args.device,
        threads=args.threads,
        source=args.source if args.weights else None,
        preset=args.preset,
        dataset=args.dataset,
    )
    if args.preset and not args.weights:
        raise RunError("--preset names the preset of --weights; a run records its own")
    apply_threads(opts.threads, framework)
    print(report_line(evaluate_run(backends.get(framework), Path(args.run or args.weights), opts)))
    return 0


# ---------------------------------------------------------------------------------------- export
def add_export_command(sub: Subcommands, framework: str) -> None:
    p = sub.add_parser(
        "export",
        help="JAX checkpoint -> PyTorch state_dict file, or back with --to-jax",
        description="Convert weights between frameworks through jax_vae.common.weights.convert. Default: a "
        "JAX run folder (or params export) -> torch.save'd state_dict at --out, with "
        "its config in <out>.json. --to-jax: a state_dict file (or a PyTorch run "
        "folder) -> a JAX params checkpoint folder at --out.",
    )
    p.add_argument("source", help="run folder, checkpoints folder, params export, or state_dict file")
    p.add_argument("--out", required=True, help="output path (never overwritten)")
    p.add_argument("--to-jax", action="store_true", help="convert PyTorch weights to a JAX params checkpoint")
    p.add_argument("--step", type=int, help="checkpoint step (default: the latest)")
    p.add_argument("--preset", help="preset of a bare state_dict that has no <file>.json beside it")
    p.add_argument(
        "--format",
        choices=FORMATS,
        help="PyTorch-layout file: pt (torch.save + <out>.json), safetensors (no pickle; the config "
        "in its metadata) or folder (a model folder: config.json, model.safetensors and a README.md "
        "model card, for jax_vae.load / torch_reference.load); default: pt for an --out ending in .pt "
        "or .pth, else safetensors",
    )
    p.set_defaults(handler=cmd_export)


def cmd_export(args: argparse.Namespace, framework: str) -> int:
    out = export(
        Path(args.source),
        Path(args.out),
        to="jax" if args.to_jax else "torch",
        step=args.step,
        preset=args.preset,
        fmt=args.format,
    )
    print(f"wrote {out}")
    return 0


# ---------------------------------------------------------------------------------------- import
def add_import_command(sub: Subcommands, framework: str) -> None:
    p = sub.add_parser(
        "import",
        help="a source's own checkpoint (pytorch/examples, the posts, the Flax example) -> jax-vae weights",
        description="Map a checkpoint saved by a source's own code onto jax-vae's layers through the key "
        "map table (jax_vae.common.weights.sources; docs/weights.md) and write "
        + ("a JAX params folder" if framework == "jax" else "a PyTorch state_dict file (.safetensors or .pt)")
        + " for evaluate --run, export and train --init-from. Layer widths are read from the file.",
    )
    p.add_argument(
        "file", help="the source's file: .pt/.pth (torch.save), .safetensors, .npz or an orbax folder"
    )
    p.add_argument("--source", required=True, choices=sources.NAMES, help="the file's layout")
    p.add_argument("--out", required=True, help="output path (never overwritten)")
    p.add_argument("--preset", help="the preset to map it onto (default: the source's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config field")
    if framework == "torch":
        p.add_argument("--format", choices=FORMATS, help="pt or safetensors (default: by --out's suffix)")
    p.set_defaults(handler=cmd_import)


def cmd_import(args: argparse.Namespace, framework: str) -> int:
    fmt = getattr(args, "format", None)
    out = import_weights(
        framework, Path(args.file), args.source, Path(args.out), args.preset, parse_sets(args.set), fmt
    )
    print(f"wrote {out}")
    return 0


# --------------------------------------------------------------------------------------- compare
def add_compare_command(sub: Subcommands, framework: str) -> None:
    p = sub.add_parser("compare", help="overlay the loss curves of run folders (e.g. JAX vs PyTorch)")
    p.add_argument("runs", nargs="+", help="run folders")
    p.add_argument("--out", default="compare.png", help="figure: .png, .pdf, .svg ... (default compare.png)")
    p.add_argument("--labels", nargs="+", help="one label per run (default: framework, preset, seed)")
    p.add_argument("--title", default="", help="figure title")
    p.add_argument("--force", action="store_true", help="overwrite an existing --out")
    p.set_defaults(handler=cmd_compare)


def cmd_compare(args: argparse.Namespace, framework: str) -> int:
    run_dirs = [Path(r) for r in args.runs]
    print(compare(run_dirs, Path(args.out), labels=args.labels, title=args.title, force=args.force))
    return 0


COMMANDS: list[Callable[[Any, str], None]] = [
    add_train_command,
    add_evaluate_command,
    add_export_command,
    add_import_command,
    add_compare_command,
]


def build_parser(framework: str) -> ArgumentParser:
    parser = ArgumentParser(
        prog=backends.command(framework), description=f"jax-vae command line ({framework} side)"
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    for add in COMMANDS:
        add(sub, framework)
    return parser


def main(argv: Sequence[str] | None = None, framework: str = "jax") -> int:
    """Parse, dispatch, and turn user errors into one line on stderr with a non-zero exit code."""
    args = build_parser(framework).parse_args(argv)
    try:
        code: int = args.handler(args, framework)
        return code
    except UserError as err:
        print(f"error: {one_line(err)}", file=sys.stderr)
        return err.exit_code
    except OSError as err:  # a path that cannot be read or written: '<path>: <cause>'
        print(f"error: {one_line(err)}", file=sys.stderr)
        return 2
