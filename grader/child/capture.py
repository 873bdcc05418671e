"""The capture run: the submission's own entry point, run up to its first optimizer step or backward.

Untrusted side (runs inside the sandbox next to the student's code).

Which model does the student train, and which albumentations pipeline reaches the training images?
Reading the code guesses; running it settles it. ``run_capture`` runs the entry points discovery
proposed (a training script, a ``main``, a notebook's code cells in order) with:

- torchvision's CIFAR10 / ImageFolder answered by grader-made 32x32 images (``runtime``'s fakes, whose
  per-channel mean and std are CIFAR-10's, so a mean computed from the data at run time is the real
  one), and every ``DataLoader`` made into a stub: no workers, batches of a few images, a few batches;
- shims for what cannot run here: ``google.colab`` (``drive.mount``), IPython magics and ``!`` lines
  (``!git clone`` maps the cloned folder to the submission itself, ``%cd`` to a dead path stays in the
  submission), ``wandb``, CUDA queries and moves (the model stays on the CPU), ``os._exit``/``os.system``;
- hooks that record every ``A.Compose`` built (with the student's line) and each one applied to an
  image, the module whose parameters reach the first optimizer (its class and the arguments it was
  built with), and a stop (``CaptureStop``) at the first ``backward()`` or optimizer step;
- a time limit (SIGALRM) well inside the probe's own.

Everything is undone afterwards (``Hooks.undo``), so the export runs on unpatched torch. What is
captured is only a choice (which class with which arguments, which pipeline object): the probe exports
and serialises it as it does any other, and the trusted side rebuilds and measures it.
"""

from __future__ import annotations

import builtins
import contextlib
import inspect
import itertools
import os
import re
import signal
import sys
import time
import traceback
import types
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_BATCHES = 3  # batches one iteration over a DataLoader yields
MAX_BATCH_SIZE = 4  # images per batch (BatchNorm in train mode needs more than one)
MAX_CELL_ERRORS = 25  # a notebook goes on after a failing cell, as Jupyter does on "run all" with errors
MAX_SHIMS = 40


class CaptureStop(BaseException):
    """The training starts here (first backward or optimizer step): the run stops."""


class CaptureTimeout(BaseException):
    """The capture's own time limit."""


class CaptureExit(BaseException):
    """``os._exit`` in the student's code (would end the probe itself)."""


@dataclass
class State:
    root: str
    entry_path: str = ""  # the file being run (absolute)
    modules: list[weakref.ref] = field(default_factory=list)  # every nn.Module made during the run
    optimizers: list[dict] = field(default_factory=list)
    applied: list[dict] = field(default_factory=list)  # A.Compose applied to an image
    torchvision_applied: list[dict] = field(default_factory=list)
    composes_start: int = 0  # index into runtime.CREATED_COMPOSES where this run began
    serial: int = 0  # DataLoader batches fetched so far
    depth: int = 0  # nested Compose calls
    stopped: dict | None = None
    shims: list[str] = field(default_factory=list)
    cloned: set[str] = field(default_factory=set)  # folder names a `!git clone` made (mapped to the submission)
    namespaces: list[dict] = field(default_factory=list)  # kept alive: the classes the run defined live here
    trained: list[Any] = field(default_factory=list)  # modules holding the first optimizer's parameters

    def shim(self, text: str) -> None:
        if len(self.shims) < MAX_SHIMS and text not in self.shims:
            self.shims.append(text[:200])


# ---- where in the student's code ---------------------------------------------------------------


def _rel(filename: str, root: str) -> str:
    return filename[len(root) :].lstrip("/")


def sites(state: State, skip: int = 2) -> tuple[str | None, str | None]:
    """('file:line' of the innermost frame in the submission, 'file:line' of the innermost frame in the
    entry point being run): where something happened, and the entry point's line that led there."""
    frame: types.FrameType | None = sys._getframe(skip)
    inner = entry = None
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(state.root):
            here = f"{_rel(filename, state.root)}:{frame.f_lineno}"
            inner = inner or here
            if filename == state.entry_path:
                entry = here
                break
        frame = frame.f_back
    return inner, entry


# ---- hooks ---------------------------------------------------------------------------------------


class Hooks:
    """Patches applied for the run and undone after it, in reverse order."""

    def __init__(self) -> None:
        self._undo: list[Callable[[], None]] = []

    def set(self, owner: Any, name: str, value: Any) -> None:
        had = name in vars(owner) if isinstance(owner, type) else hasattr(owner, name)
        old = vars(owner).get(name) if isinstance(owner, type) else getattr(owner, name, None)
        setattr(owner, name, value)

        def undo() -> None:
            if had:
                setattr(owner, name, old)
            else:
                with contextlib.suppress(AttributeError):
                    delattr(owner, name)

        self._undo.append(undo)

    def on_undo(self, fn: Callable[[], None]) -> None:
        self._undo.append(fn)

    def undo(self) -> None:
        while self._undo:
            with contextlib.suppress(Exception):
                self._undo.pop()()


def install(state: State, hooks: Hooks) -> None:
    """Every hook and shim of the run."""
    _hook_modules(state, hooks)
    _hook_optimizers(state, hooks)
    _hook_backward(state, hooks)
    _hook_albumentations(state, hooks)
    _hook_torchvision(state, hooks)
    _hook_dataloader(state, hooks)
    _shim_cuda(state, hooks)
    _shim_process(state, hooks)
    _shim_modules(state, hooks)
    _shim_libraries(state, hooks)


_RECORDING: list[State] = []  # the run in progress (nn.Module.__new__ records only while it is there)


def _hook_modules(state: State, hooks: Hooks) -> None:
    """nn.Module.__new__ keeps the constructor's arguments on the instance and a weak reference to it.

    The hook stays installed after the run (recording nothing): CPython cannot take a ``__new__`` back
    off a class without breaking every subclass's construction with arguments."""
    import torch.nn as nn

    _RECORDING.append(state)
    hooks.on_undo(_RECORDING.clear)
    if "__new__" in vars(nn.Module):
        return

    def new(cls: type, *args: Any, **kwargs: Any) -> Any:
        obj: Any = object.__new__(cls)
        if _RECORDING:
            run = _RECORDING[-1]
            try:
                obj.__dict__["_s6_args"] = (args, kwargs)
                obj.__dict__["_s6_built_at"] = sites(run)
                run.modules.append(weakref.ref(obj))
            except Exception:
                pass
        return obj

    nn.Module.__new__ = staticmethod(new)  # type: ignore[method-assign]  # see the docstring: never taken off


def _hook_optimizers(state: State, hooks: Hooks) -> None:
    import torch
    from torch.optim import optimizer as optim_mod

    original = torch.optim.Optimizer.__init__

    def init(self: Any, params: Any, *args: Any, **kwargs: Any) -> None:
        original(self, params, *args, **kwargs)
        try:
            if len(state.optimizers) < 8:
                held = [p for group in self.param_groups for p in group["params"]]
                inner, entry = sites(state)
                state.optimizers.append(
                    {
                        "class": type(self).__name__,
                        "params": [weakref.ref(p) for p in held],
                        "ids": {id(p) for p in held},
                        "at": inner,
                        "entry_at": entry,
                    }
                )
                if len(state.optimizers) == 1:  # the modules die with the student's frames: keep them now
                    state.trained = _holding(state, state.optimizers[0]["ids"])
        except Exception:
            pass

    hooks.set(torch.optim.Optimizer, "__init__", init)

    def before_step(optimizer: Any, args: Any, kwargs: Any) -> None:
        _stop(state, f"{type(optimizer).__name__}.step()")

    handle = optim_mod.register_optimizer_step_pre_hook(before_step)
    hooks.on_undo(handle.remove)


def _stop(state: State, what: str) -> None:
    if state.stopped is None:
        inner, entry = sites(state, 3)
        state.stopped = {"what": what, "at": inner, "entry_at": entry, "batch": state.serial}
    raise CaptureStop(what)


def _hook_backward(state: State, hooks: Hooks) -> None:
    import torch

    def backward(self: Any, *args: Any, **kwargs: Any) -> None:
        _stop(state, "backward()")

    def autograd_backward(*args: Any, **kwargs: Any) -> None:
        _stop(state, "backward()")

    hooks.set(torch.Tensor, "backward", backward)
    hooks.set(torch.autograd, "backward", autograd_backward)


def _hook_albumentations(state: State, hooks: Hooks) -> None:
    try:
        import albumentations as A
    except Exception:
        return
    original = A.Compose.__call__

    def call(self: Any, *args: Any, **kwargs: Any) -> Any:
        if state.depth == 0 and "image" in kwargs and len(state.applied) < 200:
            inner, entry = sites(state)
            state.applied.append({"obj": self, "at": inner, "entry_at": entry, "batch": state.serial})
        state.depth += 1
        try:
            return original(self, *args, **kwargs)
        finally:
            state.depth -= 1

    hooks.set(A.Compose, "__call__", call)


def _hook_torchvision(state: State, hooks: Hooks) -> None:
    """A torchvision Compose applied to an image is recorded too (to say the pipeline is not albumentations)."""

    def patch(module: Any) -> None:
        compose = getattr(module, "Compose", None)
        if compose is None or "__call__" not in vars(compose):
            return
        original = compose.__call__

        def call(self: Any, img: Any) -> Any:
            if len(state.torchvision_applied) < 50:
                inner, entry = sites(state)
                state.torchvision_applied.append({"at": inner, "entry_at": entry, "batch": state.serial})
            return original(self, img)

        hooks.set(compose, "__call__", call)

    if "torchvision.transforms" in sys.modules:
        patch(sys.modules["torchvision.transforms"])
        return
    from grader.child import runtime

    finder = runtime._AfterImport("torchvision.transforms", patch)
    sys.meta_path.insert(0, finder)

    def unhook() -> None:
        if finder in sys.meta_path:
            sys.meta_path.remove(finder)

    hooks.on_undo(unhook)


class _FewBatches:
    """One iteration over a DataLoader: a few batches, each counted (which batch reached the backward)."""

    def __init__(self, inner: Iterator, state: State, length: int):
        self.inner, self.state, self.left, self.length = inner, state, MAX_BATCHES, length

    def __iter__(self) -> _FewBatches:
        return self

    def __next__(self) -> Any:
        if self.left <= 0:
            raise StopIteration
        self.left -= 1
        self.state.serial += 1
        return next(self.inner)

    def __len__(self) -> int:
        return self.length


def _hook_dataloader(state: State, hooks: Hooks) -> None:
    from torch.utils.data import DataLoader

    original_init = DataLoader.__init__
    signature = inspect.signature(original_init)

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        try:
            bound = signature.bind(self, *args, **kwargs)
            a = bound.arguments
            if a.get("batch_sampler") is None:
                size = a.get("batch_size", 1)
                if isinstance(size, int) and size > MAX_BATCH_SIZE:
                    a["batch_size"] = MAX_BATCH_SIZE
                a["drop_last"] = False
            a["num_workers"] = 0
            for name, value in (("pin_memory", False), ("persistent_workers", False), ("prefetch_factor", None)):
                if name in signature.parameters:
                    a[name] = value
            a.pop("multiprocessing_context", None)
            args, kwargs = bound.args[1:], bound.kwargs
        except TypeError:
            pass
        original_init(self, *args, **kwargs)

    original_iter = DataLoader.__iter__

    def iterate(self: Any) -> Any:
        try:
            length = len(self)
        except Exception:
            length = 0
        return _FewBatches(original_iter(self), state, length)

    hooks.set(DataLoader, "__init__", init)
    hooks.set(DataLoader, "__iter__", iterate)


def _cpu(value: Any) -> Any:
    import torch

    if isinstance(value, str) and value.startswith("cuda"):
        return "cpu"
    if isinstance(value, torch.device) and value.type == "cuda":
        return torch.device("cpu")
    return value


def _shim_cuda(state: State, hooks: Hooks) -> None:
    """No GPU here: queries answer, moves to 'cuda' stay on the CPU (is_available() stays False)."""
    import torch
    import torch.nn as nn

    def noted(text: str, value: Any) -> Callable[..., Any]:
        def fn(*args: Any, **kwargs: Any) -> Any:
            state.shim(text)
            return value

        return fn

    cuda = torch.cuda
    hooks.set(cuda, "get_device_name", noted("torch.cuda queries answered without a GPU", "no GPU (grader)"))
    hooks.set(
        cuda,
        "get_device_properties",
        noted(
            "torch.cuda queries answered without a GPU",
            types.SimpleNamespace(name="no GPU (grader)", total_memory=0, major=0, minor=0, multi_processor_count=0),
        ),
    )
    for name in ("memory_allocated", "max_memory_allocated", "memory_reserved", "max_memory_reserved"):
        hooks.set(cuda, name, noted("torch.cuda queries answered without a GPU", 0))
    for name in ("synchronize", "empty_cache", "reset_peak_memory_stats", "set_device"):
        hooks.set(cuda, name, noted("torch.cuda queries answered without a GPU", None))

    tensor_to, module_to = torch.Tensor.to, nn.Module.to

    def t_to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        return tensor_to(self, *[_cpu(a) for a in args], **kwargs)

    def m_to(self: Any, *args: Any, **kwargs: Any) -> Any:
        if "device" in kwargs:
            kwargs["device"] = _cpu(kwargs["device"])
        return module_to(self, *[_cpu(a) for a in args], **kwargs)

    def t_cuda(self: Any, *args: Any, **kwargs: Any) -> Any:
        state.shim(".cuda() kept on the CPU (no GPU here)")
        return self

    hooks.set(torch.Tensor, "to", t_to)
    hooks.set(nn.Module, "to", m_to)
    hooks.set(torch.Tensor, "cuda", t_cuda)
    hooks.set(nn.Module, "cuda", t_cuda)


def _shim_libraries(state: State, hooks: Hooks) -> None:
    """``torch.compile`` returns the model as it is (compiling costs more than the whole run may take);
    torchsummary's ``summary`` runs on the CPU (its default device is 'cuda')."""
    import importlib.util

    import torch

    def compile_(model: Any = None, *args: Any, **kwargs: Any) -> Any:
        state.shim("torch.compile skipped (the model runs as written)")
        return model if model is not None else (lambda fn: fn)

    hooks.set(torch, "compile", compile_)
    if importlib.util.find_spec("torchsummary") is None:
        return
    try:  # the student's library, when installed (not the grader's)
        torchsummary = importlib.import_module("torchsummary")
        inner = importlib.import_module("torchsummary.torchsummary")
    except Exception:
        return
    original = inner.summary

    def summary(model: Any, input_size: Any, batch_size: int = -1, device: Any = "cuda", *args: Any) -> Any:
        return original(model, input_size, batch_size=batch_size, device="cpu")

    hooks.set(torchsummary, "summary", summary)
    hooks.set(inner, "summary", summary)


def _shim_process(state: State, hooks: Hooks) -> None:
    def hard_exit(status: int = 0) -> None:
        raise CaptureExit(status)

    def system(command: str) -> int:
        state.shim(f"os.system({str(command)[:80]!r}) skipped")
        return 0

    hooks.set(os, "_exit", hard_exit)
    hooks.set(os, "system", system)
    hooks.set(builtins, "input", lambda *a, **k: "")


class _AttrDict(dict):
    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return self.get(name)

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def update(self, *args: Any, **kwargs: Any) -> None:  # wandb.config.update(dict, allow_val_change=True)
        kwargs.pop("allow_val_change", None)
        super().update(*args, **kwargs)


def _wandb(state: State) -> types.ModuleType:
    """wandb without a network: init/log/watch/finish do nothing; ``wandb.config`` holds what init got."""
    module = types.ModuleType("wandb")
    config = _AttrDict()

    def init(*args: Any, config: Any = None, **kwargs: Any) -> Any:
        state.shim("wandb: nothing is logged")
        if isinstance(config, dict):
            module.config.update(config)
        return types.SimpleNamespace(
            config=module.config, log=lambda *a, **k: None, finish=lambda *a, **k: None, name="grader", id="grader"
        )

    module.__dict__.update(
        init=init,
        config=config,
        log=lambda *a, **k: None,
        watch=lambda *a, **k: None,
        finish=lambda *a, **k: None,
        login=lambda *a, **k: True,
        save=lambda *a, **k: None,
        Image=lambda *a, **k: None,
        Table=lambda *a, **k: None,
        run=None,
    )
    return module


def _colab(state: State) -> dict[str, types.ModuleType]:
    def mount(path: Any = "", *args: Any, **kwargs: Any) -> None:
        state.shim(f"drive.mount({str(path)!r}) skipped (no Google Drive here)")

    colab = types.ModuleType("google.colab")
    drive = types.ModuleType("google.colab.drive")
    drive.__dict__.update(mount=mount, flush_and_unmount=lambda *a, **k: None)
    files = types.ModuleType("google.colab.files")
    files.__dict__.update(upload=lambda *a, **k: {}, download=lambda *a, **k: None)
    patches = types.ModuleType("google.colab.patches")
    patches.__dict__.update(cv2_imshow=lambda *a, **k: None)
    output = types.ModuleType("google.colab.output")
    output.__dict__.update(clear=lambda *a, **k: None, enable_custom_widget_manager=lambda *a, **k: None)
    colab.__dict__.update(drive=drive, files=files, patches=patches, output=output)
    colab.__path__ = []  # a package: `from google.colab import drive`
    return {
        "google.colab": colab,
        "google.colab.drive": drive,
        "google.colab.files": files,
        "google.colab.patches": patches,
        "google.colab.output": output,
    }


def _shim_modules(state: State, hooks: Hooks) -> None:
    shims = {"wandb": _wandb(state), **_colab(state)}
    for name, module in shims.items():
        previous = sys.modules.get(name)
        sys.modules[name] = module

        def undo(name: str = name, previous: Any = previous) -> None:
            if previous is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = previous

        hooks.on_undo(undo)


# ---- notebooks: IPython lines ---------------------------------------------------------------------


class Shell:
    """What ``!cmd``, ``%magic`` and ``get_ipython()`` do in the run: mostly nothing, said once each."""

    def __init__(self, state: State, root: Path, home: Path):
        self.state, self.root, self.home = state, root, home

    def system(self, command: str) -> list[str]:
        words = command.split()
        if words[:2] == ["git", "clone"]:
            self._clone(words[2:])
            return []
        if words[:1] == ["cd"] and len(words) > 1:
            self.magic("cd", " ".join(words[1:]))
            return []
        self.state.shim(f"!{command.strip()[:80]} skipped")
        return []

    def _clone(self, args: list[str]) -> None:
        """``!git clone URL [DIR]``: the submission is that repository; DIR points at it."""
        rest = [a for a in args if not a.startswith("-")]
        if not rest:
            return
        url = rest[0]
        name = rest[1] if len(rest) > 1 else re.sub(r"\.git$", "", url.rstrip("/").rsplit("/", 1)[-1])
        name = Path(name.rstrip("/")).name
        if not name:
            return
        self.state.cloned.add(name)
        target = Path.cwd() / name
        if not target.exists():
            with contextlib.suppress(OSError):
                target.symlink_to(self.root, target_is_directory=True)
        self.state.shim(f"!git clone {url}: the submission itself stands for the clone")

    def magic(self, name: str, line: str = "") -> Any:
        line = line.strip()
        if name == "cd":
            self._cd(line)
        elif name in ("pip", "conda"):
            self.state.shim(f"%{name} {line[:60]} skipped")
        elif name == "run" and line.endswith(".py"):
            self.state.shim(f"%run {line} skipped")
        elif name not in ("matplotlib", "load_ext", "autoreload", "reload_ext", "config", "env", "time", "timeit"):
            self.state.shim(f"%{name} skipped")
        return None

    def _cd(self, target: str) -> None:
        target = target.strip().strip("'\"")
        if not target or target == "~":
            return
        path = Path(target) if Path(target).is_absolute() else Path.cwd() / target
        with contextlib.suppress(OSError):
            if path.is_dir() and str(path.resolve()).startswith(str(self.root)):
                os.chdir(path)
                return
        # A path of the Colab machine (/content/REPO/S6, a Drive folder): the same folder in the submission.
        parts = [p for p in Path(target).parts if p not in ("/", "..", ".")]
        for i in range(len(parts)):
            if parts[i] in self.state.cloned:
                candidate = self.root.joinpath(*parts[i + 1 :])
                if candidate.is_dir():
                    os.chdir(candidate)
                    self.state.shim(f"%cd {target}: the submission's {'/'.join(parts[i + 1 :]) or '.'}")
                    return
        for i in range(len(parts)):
            candidate = self.root.joinpath(*parts[i:])
            if parts[i:] and candidate.is_dir():
                os.chdir(candidate)
                self.state.shim(f"%cd {target}: the submission's {'/'.join(parts[i:])}")
                return
        os.chdir(self.home)
        self.state.shim(f"%cd {target}: no such folder here, the notebook's own folder used")

    # get_ipython() API
    def run_line_magic(self, name: str, line: str) -> Any:
        return self.magic(name, line)

    def run_cell_magic(self, name: str, line: str, cell: str) -> Any:
        self.state.shim(f"%%{name} cell skipped")
        return None

    def getoutput(self, command: str) -> list[str]:
        return self.system(command)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return lambda *a, **k: None


# ---- running an entry point -----------------------------------------------------------------------


def _fresh_main(path: Path, shell: Shell | None) -> types.ModuleType:
    module = types.ModuleType("__main__")
    module.__file__ = str(path)
    module.__builtins__ = builtins  # type: ignore[attr-defined]  # a module's own builtins, as runpy sets them
    if shell is not None:
        module.__dict__.update(
            get_ipython=lambda: shell,
            display=lambda *a, **k: None,
            _s6_shell=shell.system,
            _s6_magic=shell.magic,
        )
    return module


def _run_script(entry: dict, path: Path, state: State) -> None:
    module = _fresh_main(path, None)
    state.namespaces.append(module.__dict__)
    sys.modules["__main__"] = module
    code = compile(path.read_text(encoding="utf-8", errors="replace"), str(path), "exec")
    exec(code, module.__dict__)
    if entry.get("call_main") and callable(module.__dict__.get("main")) and state.stopped is None:
        module.__dict__["main"]()


def _run_notebook(entry: dict, path: Path, state: State, root: Path, report: dict) -> None:
    shell = Shell(state, root, path.parent)
    module = _fresh_main(path, shell)
    state.namespaces.append(module.__dict__)
    sys.modules["__main__"] = module
    lines = path.read_text(encoding="utf-8", errors="replace").split("\n")
    errors = report.setdefault("cell_errors", [])
    for start, end, magic, arg, _index in entry.get("cells", []):
        text = "\n".join(lines[start - 1 : end])
        if magic == "skip":
            continue
        if magic == "writefile":
            _write_cell(text, str(arg), path.parent, state)
            continue
        try:
            code = compile("\n" * (start - 1) + text, str(path), "exec")
            exec(code, module.__dict__)
        except (CaptureStop, CaptureTimeout):
            raise
        except BaseException as exc:  # a notebook goes on with its next cell, as "run all" shows it
            if len(errors) < MAX_CELL_ERRORS:
                errors.append(_error(exc, state.root))
            if len(errors) >= MAX_CELL_ERRORS:
                raise
        if state.stopped is not None:
            raise CaptureStop("stopped")


def _write_cell(text: str, target: str, folder: Path, state: State) -> None:
    """``%%writefile model.py``: the cell's body becomes that file (inside the submission's copy)."""
    body = text.split("\n", 1)[1] if "\n" in text else ""
    path = Path(target)
    if path.is_absolute() or ".." in path.parts:
        path = Path(path.name)
    with contextlib.suppress(OSError):
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(body)
        state.shim(f"%%writefile {target}: written into the submission's copy")


def _error(exc: BaseException, root: str) -> dict:
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith(root)]
    where = f"{_rel(frames[-1].filename, root)}:{frames[-1].lineno}" if frames else ""
    if isinstance(exc, SystemExit):
        text = f"the code called exit({exc.code!r})"
    elif isinstance(exc, CaptureExit):
        text = f"the code called os._exit({exc.args[0] if exc.args else ''})"
    else:
        text = f"{type(exc).__name__}: {exc}"
    return {"message": text[:400], "where": where}


@contextlib.contextmanager
def _time_limit(seconds: float) -> Iterator[None]:
    """SIGALRM raises CaptureTimeout after ``seconds`` (and again every half second, should it be caught)."""

    def fire(signum: int, frame: Any) -> None:
        raise CaptureTimeout()

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, max(0.05, seconds), 0.5)
    try:
        yield
    finally:
        _stop_timer(previous)


def _stop_timer(handler: Any = signal.SIG_DFL) -> None:
    """The alarm off and its handler back, even when the alarm fires in the middle of it."""
    for _ in range(100):
        try:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, handler)
            return
        except CaptureTimeout:
            continue


def run_capture(spec: dict, root: Path) -> tuple[dict, State | None]:
    """Run the spec's entry points in turn until one reaches an optimizer; the report and the state."""
    from grader.child import runtime

    capture = spec.get("capture") or {}
    entries = capture.get("entries") or []
    report: dict[str, Any] = {"tried": []}
    if not entries:
        return report, None
    deadline = time.monotonic() + float(capture.get("seconds", 20))
    start = time.perf_counter()
    state = State(root=str(root))
    state.composes_start = len(runtime.CREATED_COMPOSES)
    hooks = Hooks()
    saved_main, saved_argv, saved_cwd = sys.modules.get("__main__"), list(sys.argv), os.getcwd()
    saved_path = list(sys.path)
    runtime.CAPTURING[0] = True
    try:
        install(state, hooks)
        for entry in entries:
            left = deadline - time.monotonic()
            if left <= 0.2:
                report["tried"].append({"entry": entry.get("shown_as"), "status": "no time left"})
                break
            tried = _run_entry(entry, root, state, left, report)
            report["tried"].append(tried)
            if state.optimizers or state.stopped:
                report["entry"] = entry.get("shown_as") or entry.get("file")
                report["entry_file"] = entry.get("file")
                break
    finally:
        _stop_timer()
        runtime.CAPTURING[0] = False
        hooks.undo()
        with contextlib.suppress(Exception):
            import torch

            torch.set_grad_enabled(True)  # a student's torch.set_grad_enabled(False) must not reach the export
        if saved_main is not None:
            sys.modules["__main__"] = saved_main
        sys.argv = saved_argv
        sys.path[:] = saved_path
        with contextlib.suppress(OSError):
            os.chdir(saved_cwd)
    report["seconds"] = round(time.perf_counter() - start, 3)
    report["stopped"] = state.stopped
    report["shims"] = list(state.shims)
    report["batches"] = state.serial
    if "entry" not in report and report["tried"]:
        report["entry"] = report["tried"][0].get("entry")
    return report, state


def _run_entry(entry: dict, root: Path, state: State, seconds: float, report: dict) -> dict:
    path = (root / str(entry.get("file", ""))).resolve()
    tried: dict[str, Any] = {"entry": entry.get("shown_as") or entry.get("file"), "kind": entry.get("kind")}
    if not str(path).startswith(str(root)) or not path.is_file():
        tried["status"] = "missing"
        return tried
    state.entry_path = str(path)
    sys.argv = [str(path)]
    folder = path.parent
    for extra in (str(root), "", str(folder)):
        if extra not in sys.path:
            sys.path.insert(0, extra)
    with contextlib.suppress(OSError):
        os.chdir(folder)
    began = time.perf_counter()
    try:
        with _time_limit(seconds):
            if entry.get("kind") == "notebook":
                _run_notebook(entry, path, state, root, tried)
            else:
                _run_script(entry, path, state)
        tried["status"] = "finished"
    except CaptureStop:
        tried["status"] = "stopped"
    except CaptureTimeout:
        tried["status"] = "timeout"
    except BaseException as exc:  # SystemExit, CaptureExit, the student's own errors
        tried["status"] = "exit" if isinstance(exc, (SystemExit, CaptureExit)) else "error"
        tried["error"] = _error(exc, state.root)
    if state.stopped is not None:
        tried["status"] = "stopped"
    tried["seconds"] = round(time.perf_counter() - began, 3)
    return tried


# ---- what the run settled -------------------------------------------------------------------------


def _holding(state: State, wanted: set[int]) -> list[Any]:
    """The modules holding every parameter in ``wanted``: the smallest first; among modules holding the
    same parameters, the submission's own classes first, then the outermost (a model that wraps its
    own Sequential)."""
    found = []
    for ref in state.modules:
        module = ref()
        if module is None:
            continue
        try:
            ids = {id(p) for p in module.parameters()}
        except Exception:
            continue
        if wanted and wanted <= ids:
            # A wrapper of the library's (DataParallel, a compiled module) holds the same parameters
            # as the student's model inside it: the student's own class comes first.
            own = class_file(type(module), state.root) is not None
            found.append((len(ids), not own, -sum(1 for _ in module.modules()), id(module), module))
    found.sort(key=lambda t: t[:4])
    return [t[4] for t in found[:4]]


def trained_modules(state: State) -> list[Any]:
    """The modules whose parameters reached the first optimizer (``_holding``), found when it was made."""
    return list(state.trained)


def class_file(cls: type, root: str) -> str | None:
    """The submission file that defines ``cls`` (relative), or None."""
    for name in ("forward", "__init__"):
        fn = vars(cls).get(name)
        code = getattr(fn, "__code__", None)
        if code is not None and code.co_filename.startswith(root):
            return _rel(code.co_filename, root)
    module = sys.modules.get(cls.__module__)
    filename = getattr(module, "__file__", None) or ""
    return _rel(filename, root) if filename.startswith(root) else None


def applied_pipeline(state: State) -> tuple[Any, dict] | None:
    """The albumentations pipeline the training images went through, and how it was found: applied to
    the batch that reached the backward; else applied to some image; else built during the run."""
    from grader.child import runtime

    built_all = {id(obj): site for obj, site in runtime.CREATED_COMPOSES}
    stop_batch = (state.stopped or {}).get("batch")

    def train_like(obj: Any) -> bool:
        from grader.augment_inspect import leaves

        try:
            names = {type(t).__name__ for t in leaves(obj)}
        except Exception:
            return False
        return bool(names & {"HorizontalFlip", "ShiftScaleRotate", "CoarseDropout", "Affine"})

    def pick(records: list[dict]) -> dict | None:
        return next((r for r in records if train_like(r["obj"])), records[0] if records else None)

    if state.stopped is not None and stop_batch:
        record = pick([r for r in state.applied if r["batch"] == stop_batch])
        if record is not None:
            return record["obj"], {
                "how": "applied to the training batch",
                "site": built_all.get(id(record["obj"])),
                "applied_at": record["at"],
                "entry_at": record["entry_at"],
            }
    record = pick(list(reversed([r for r in state.applied if train_like(r["obj"])])))
    if record is not None:
        return record["obj"], {
            "how": "applied to an image",
            "site": built_all.get(id(record["obj"])),
            "applied_at": record["at"],
            "entry_at": record["entry_at"],
        }
    for obj, site in runtime.CREATED_COMPOSES[state.composes_start :]:
        if train_like(obj):
            return obj, {"how": "built by the run (not seen applied)", "site": site, "applied_at": None}
    return None


def torchvision_applied(state: State) -> str | None:
    """'file:line' where a torchvision Compose was applied to the training batch, if it was."""
    stop_batch = (state.stopped or {}).get("batch")
    for record in state.torchvision_applied:
        if stop_batch and record["batch"] == stop_batch:
            return record["at"]
    return None


def built_pipelines(state: State) -> list[dict]:
    """Every A.Compose the run built, with the student's line (for the report)."""
    from grader.child import runtime

    return [{"site": site} for _obj, site in itertools.islice(runtime.CREATED_COMPOSES[state.composes_start :], 20)]
