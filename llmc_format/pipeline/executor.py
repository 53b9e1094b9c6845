"""Where per-tensor work runs: ``map_ordered(fn, items, window)`` on threads or on a Ray cluster.

Pack encodes tensors concurrently and unpack decodes them concurrently, and both must
write in source order with bounded memory. One small interface serves both:
``map_ordered`` applies ``fn`` to a lazily consumed stream of items and yields results in
input order, with at most ``window`` items drawn from the stream and not yet yielded —
so a caller whose items load a tensor holds at most ``window`` tensors (plus the one it
is writing), however large the model.

Backends:

- ``local`` (default): a thread pool of ``jobs`` threads. Threads suffice because the
  work releases the GIL: video encoders are FFmpeg processes, PyAV decodes with the GIL
  released, zstd and numpy release it. ``fn`` and the items stay in this process, so an
  item may hold an open file handle or a closure (loading happens on the worker thread).
- ``ray``: each item becomes a Ray task (``pip install 'llmc-format[ray]'``). ``fn`` must be
  a module-level function and items plain data (they are pickled and shipped to workers),
  so callers hand over arrays, not file handles; ``remote`` tells them so. Results come
  back to the driver, which alone writes the output: one archive, in source order.

An item wrapped in ``Ready`` is already computed: it passes through unchanged and keeps
its place (pack uses this for tensors copied from an earlier archive, which only the
driver can read).
"""

from __future__ import annotations

import contextlib
import os
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, TypeVar

from llmc_format.errors import LlmcError
from llmc_format.runtime import default_jobs

T = TypeVar("T")
R = TypeVar("R")

#: names accepted by ``make_executor`` (the CLI's ``--executor``)
BACKENDS = ("local", "ray")
RAY_HINT = "pip install 'llmc-format[ray]' (or pip install ray)"


def ahead_window(workers: int) -> int:
    """Items in flight for ``map_ordered`` with a size budget: enough small items to keep
    ``workers`` busy while a large one is at the head of the line (measured on SmolLM2
    unpack, 2 jobs: both decoders busy 99% of the time, against ~70% with a window of 2)."""
    return 4 * workers + 2


@dataclass(frozen=True)
class Ready(Generic[R]):
    """A result computed by the caller: ``map_ordered`` yields it in its place, untouched."""

    value: R


class Executor(ABC):
    """Runs ``fn`` over items on some workers; use as a context manager or ``close()``."""

    #: backend name ("local", "ray")
    name: ClassVar[str]
    #: True when ``fn`` runs in other processes: it and the items are pickled
    remote: ClassVar[bool] = False

    @property
    @abstractmethod
    def workers(self) -> int:
        """How many items can be worked on at once."""

    def default_window(self) -> int:
        """Items in flight when the caller gives no window: every worker busy, one queued."""
        return self.workers + 1

    def map_ordered(self, fn: Callable[[T], R], items: Iterable[T | Ready[R]],
                    window: int | None = None, *,
                    cost: Callable[[T | Ready[R]], int] | None = None,
                    budget: int | None = None) -> Iterator[R]:
        """``fn(item)`` for each item, yielded in input order.

        ``items`` is consumed lazily: at most ``window`` (default ``default_window()``)
        items are drawn and not yet yielded. If ``fn`` raises, the exception propagates
        from the iteration at that item's place and work not yet started is cancelled.

        ``cost`` and ``budget`` bound the items in flight by size as well: an item is
        drawn only while the drawn-not-yielded items' summed ``cost(item)`` is under
        ``budget``, or when none is (so they hold at most ``budget`` plus one item's cost). With a window
        several times the workers, small items then keep the workers busy while a large
        one holds the head of the line (models alternate large matrices and tiny norms),
        without letting memory grow with the window.
        """
        window = self.default_window() if window is None else window
        if type(window) is not int or window < 1:
            raise LlmcError(f"executor window must be a positive int, got {window!r}")
        if (cost is None) != (budget is None):
            raise LlmcError("executor cost and budget go together")
        pending: deque[tuple[Any, int]] = deque()
        in_flight = 0
        stream = iter(items)
        exhausted = False
        try:
            while True:
                while not exhausted and len(pending) < window and (
                        budget is None or not pending or in_flight < budget):
                    item = next(stream, _END)
                    if item is _END:
                        exhausted = True
                        continue
                    size = cost(item) if cost is not None else 0
                    in_flight += size
                    pending.append((item if isinstance(item, Ready) else self._submit(fn, item),
                                    size))
                if not pending:
                    return
                handle, size = pending.popleft()
                in_flight -= size
                yield handle.value if isinstance(handle, Ready) else self._result(handle)
        finally:
            for handle, _ in pending:
                if not isinstance(handle, Ready):
                    self._cancel(handle)

    @abstractmethod
    def _submit(self, fn: Callable[[Any], Any], item: Any) -> Any:
        """Start ``fn(item)``; return a handle for ``_result``/``_cancel``."""

    @abstractmethod
    def _result(self, handle: Any) -> Any:
        """Wait for a handle's result (re-raising the work's exception)."""

    @abstractmethod
    def _cancel(self, handle: Any) -> None:
        """Drop work whose result will not be asked for (best effort)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release workers."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_END = object()


class LocalExecutor(Executor):
    """A thread pool of ``jobs`` threads (default: the usable cores)."""

    name = "local"

    def __init__(self, jobs: int | None = None) -> None:
        if jobs is not None and (type(jobs) is not int or jobs < 1):
            raise LlmcError(f"jobs must be a positive int, got {jobs!r}")
        self._jobs = jobs or default_jobs()
        self._pool: ThreadPoolExecutor | None = None

    @property
    def workers(self) -> int:
        return self._jobs

    def _submit(self, fn: Callable[[Any], Any], item: Any) -> Future[Any]:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._jobs, thread_name_prefix="llmc-job")
        return self._pool.submit(fn, item)

    def _result(self, handle: Future[Any]) -> Any:
        return handle.result()

    def _cancel(self, handle: Future[Any]) -> None:
        handle.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None


class RayExecutor(Executor):
    """Ray tasks, one per item, each reserving ``task_cpus`` CPUs of the cluster.

    ``address`` is a Ray cluster address (``"auto"``, ``"ray://head:10001"``,
    ``"head:6379"``); ``None`` joins the cluster ``$RAY_ADDRESS`` names or, without one,
    starts a Ray instance on this machine. If Ray is already initialized in this process
    it is used as it is and left running at ``close()``; otherwise it is shut down there.
    ``jobs`` caps the tasks in flight (default: the cluster's CPUs / ``task_cpus``).
    """

    name = "ray"
    remote = True

    def __init__(self, address: str | None = None, *, jobs: int | None = None,
                 task_cpus: float = 1.0, init_kwargs: dict[str, Any] | None = None) -> None:
        if jobs is not None and (type(jobs) is not int or jobs < 1):
            raise LlmcError(f"jobs must be a positive int, got {jobs!r}")
        if not task_cpus > 0:
            raise LlmcError(f"task_cpus must be positive, got {task_cpus!r}")
        ray = _import_ray()
        self._ray = ray
        self._owns = not ray.is_initialized()
        if self._owns:
            try:
                ray.init(address=address, **{"log_to_driver": False, **(init_kwargs or {})})
            except Exception as exc:  # ConnectionError, ValueError, RuntimeError...
                where = address or os.environ.get("RAY_ADDRESS") or "a local Ray instance"
                raise LlmcError(f"cannot start or join Ray at {where}: {exc}") from None
        self.task_cpus = task_cpus
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        self._jobs = jobs or max(1, int(cpus // task_cpus))
        self._remote_fns: dict[Callable[[Any], Any], Any] = {}

    @property
    def workers(self) -> int:
        return self._jobs

    def _submit(self, fn: Callable[[Any], Any], item: Any) -> Any:
        remote = self._remote_fns.get(fn)
        if remote is None:
            remote = self._remote_fns[fn] = self._ray.remote(num_cpus=self.task_cpus)(fn)
        return remote.remote(item)

    def _result(self, handle: Any) -> Any:
        # a task's exception comes back as a RayTaskError that is also an instance of the
        # original class, so `except CodecError` still catches it; unwrap it all the same
        # so that messages read as they would locally
        try:
            return self._ray.get(handle)
        except self._ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            if isinstance(cause, BaseException):
                raise cause from None
            raise

    def _cancel(self, handle: Any) -> None:
        with contextlib.suppress(Exception):  # already finished, or the cluster is gone
            self._ray.cancel(handle)

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
        self._owns = False


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise LlmcError(f"the ray executor needs Ray: {RAY_HINT}") from None
    return ray


def make_executor(backend: str = "local", *, jobs: int | None = None,
                  address: str | None = None) -> Executor:
    """The executor named ``backend`` (``local`` or ``ray``); ``address`` is Ray's only."""
    if backend == "local":
        if address is not None:
            raise LlmcError("a Ray address needs the ray executor (--executor ray)")
        return LocalExecutor(jobs)
    if backend == "ray":
        return RayExecutor(address, jobs=jobs)
    raise LlmcError(f"executor must be one of {', '.join(BACKENDS)}, not {backend!r}")
