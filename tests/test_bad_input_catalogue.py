"""The bad-input page, walked: every refused value it lists raises what it says.

docs/reference/bad-input.md is a catalogue: per public parameter, the values
refused and the exception and message start they get. This module parses its
tables and turns every row into calls, so the page and the code cannot drift
apart. A row is turned into calls in one of four ways, tried in this order:

1. `SKIPPED`: listed on purpose, with the reason (shown as a skip).
2. `HANDLED`: a hand-written mapping from the row's text to calls, for rows
   that describe a situation in words ("anything, while it is closing").
3. By value: the row names the parameter(s) and lists its refused values as
   code (`0`, `-3`), in a section that says how to pass a value.
4. By example call: the row shows the refused call itself (`submit(42)`,
   `Dispatcher(4, 100)`), evaluated on a dispatcher.

A row none of these covers becomes a failing case, so a new row on the page
cannot be silently ignored; `test_bad_input_catalogue_mapping_matches_page`
fails on hand mappings whose row is gone.
"""

from __future__ import annotations

import ast
import asyncio
import builtins
import contextlib
import dataclasses
import functools
import inspect
import math
import re
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import asyncpool

PAGE = Path(__file__).resolve().parent.parent / "docs" / "reference" / "bad-input.md"

# The heading of the page's subsection of failures found when the job runs.
RUNTIME = "mistakes-found-only-when-the-job-runs"

URL = "https://example.com/"

Call = Callable[[], Awaitable[BaseException | None]]
"""Runs one refused call; returns what it raised, or None if it raised nothing."""


# --------------------------------------------------------------- the names the page uses


async def fetch(url: str) -> str:
    """The page's `fetch`: `async def fetch(url)`."""
    return url


class BatchJob:
    """The page's job class."""

    async def process(self) -> None:
        pass


class BadJob:
    """An object whose `process` is not callable."""

    process = 42


def blocking(lock: object) -> None:
    """A module-level blocking function, given an argument that cannot be pickled."""


def numbers(n: int) -> Iterator[int]:
    """The page's generator function."""
    yield from range(n)


async def stream(n: int) -> AsyncIterator[int]:
    """The page's async generator function."""
    for i in range(n):
        yield i


class StreamJob:
    """The page's job whose `process` is an async generator function."""

    async def process(self) -> AsyncIterator[int]:
        yield 1


async def _fails() -> None:
    raise ValueError("boom")


async def _noop() -> None:
    pass


async def _double(x: int) -> int:
    return 2 * x


# A lambda made at module level is named plain `<lambda>`, as on the page.
a_lambda = lambda: None  # noqa: E731

_NAMESPACE: dict[str, Any] = {
    "math": math,
    "asyncpool": asyncpool,
    "Retry": asyncpool.Retry,
    "BatchJob": BatchJob,
    "StreamJob": StreamJob,
    "numbers": numbers,
    "stream": stream,
    "fetch": fetch,
    "url": URL,
    "items": [1],
    "fn": _double,
}


def _eval(code: str, **names: Any) -> Any:
    # eval() of text from our own documentation page, checked in next to this
    # test (not outside input): it turns the page's literal values (`math.nan`,
    # `b"x"`) and example calls (`submit(42)`) into Python.
    return eval(code, {**_NAMESPACE, **names})


# ------------------------------------------------------------------ reading the page


@dataclasses.dataclass(frozen=True)
class Row:
    """One table row of the page that documents a refused input."""

    section: str
    name: str  # the parameter cell (inherited by continuation rows); "" in 2-column tables
    what: str  # the refused / "what you pass" / "when" cell
    error: type[BaseException]
    message: str  # the documented start, cut at `…`
    variants: tuple[str, ...]  # code in the parenthesis after the message

    @property
    def label(self) -> str:
        return f"{self.name} | {self.what}" if self.name else self.what

    @property
    def key(self) -> tuple[str, str]:
        return (self.section, self.label)

    def case(self, id: str, run: Call, message: str | None = None) -> Case:
        return Case(id, run, self.error, self.message if message is None else message)


@dataclasses.dataclass(frozen=True)
class Case:
    """One refused call and what the page says it raises."""

    id: str
    run: Call
    error: type[BaseException]
    message: str
    skip: str | None = None
    unhandled: str | None = None


def _section(heading: str) -> str:
    code = re.search(r"`(\w+)", heading)
    return code.group(1) if code else re.sub(r"\W+", "-", heading.lower()).strip("-")


def _cut(message: str) -> str:
    return message.split("…")[0]


def _error_type(name: str) -> type[BaseException] | None:
    found = getattr(asyncpool, name, None) or getattr(builtins, name, None)
    return found if isinstance(found, type) and issubclass(found, BaseException) else None


def _parse_message(cell: str) -> tuple[type[BaseException], str, tuple[str, ...]]:
    for match in re.finditer(r"`(\w+): ([^`]*)`", cell):
        error = _error_type(match.group(1))
        if error is not None:
            rest = cell[match.end() :].strip()
            variants = tuple(re.findall(r"`([^`]+)`", rest)) if rest.startswith("(") else ()
            return error, _cut(match.group(2)), variants
    raise AssertionError(f"no `Exception: message` in {cell!r}")


def read_rows(page: Path = PAGE) -> list[Row]:
    """Every row of every table of the page, with its section."""
    rows: list[Row] = []
    section = ""
    header: list[str] | None = None
    name = ""
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            section = _section(line.lstrip("#").strip())
        if not line.startswith("|"):
            header = None
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if header is None:
            header, name = cells, ""
            continue
        assert len(cells) == len(header), f"cells do not match the header: {line}"
        if all(re.fullmatch(r":?-+:?", cell) for cell in cells):
            continue
        if "refused" in header:
            name = cells[0] or name
            what = cells[header.index("refused")]
            row_name = name
        else:
            what, row_name = cells[0], ""
        error, message, variants = _parse_message(cells[-1])
        rows.append(Row(section, row_name, what, error, message, variants))
    return rows


ROWS = read_rows()
ROW = {row.key: row for row in ROWS}


# ------------------------------------------------------------ expected messages


def _type_name(value: object) -> str:
    return type(value).__name__


def _typed_repr(value: object) -> str:
    return f"{type(value).__name__} {value!r}"


# How a message can show the refused value after its last "got ".
_FORMS: tuple[Callable[[object], str], ...] = (repr, str, _typed_repr, _type_name)

_UNKNOWN = object()


def _adjusted(message: str, first: object, value: object) -> str:
    """The message documented for `first`, as it starts for `value`."""
    head, got, tail = message.rpartition("got ")
    if not got:
        return message
    forms = [form for form in _FORMS if first is not _UNKNOWN and form(first) == tail]
    if not forms:
        return message  # it does not show the value: the same for every value
    shown = {form(value) for form in forms} if value is not _UNKNOWN else set()
    return head + got + shown.pop() if len(shown) == 1 else head + got


def _swap(message: str, variant: str) -> str:
    """The message with `variant` ("got bool True", "is closed") in place of its tail."""
    word = variant.split()[0]
    starts = [m.start() for m in re.finditer(rf"\b{re.escape(word)} ", message)]
    assert starts, f"{word!r} not in {message!r}"
    return _cut(message[: starts[-1]] + variant)


def _through(message: str, marker: str) -> str:
    """The message up to and including the last `marker`: the part every case shares."""
    at = message.rfind(marker)
    assert at >= 0, f"{marker!r} not in {message!r}"
    return message[: at + len(marker)]


def _expect(row: Row, values: Sequence[object], index: int, message: str | None = None) -> str:
    message = row.message if message is None else message
    if index == 0:
        return message
    if len(row.variants) == len(values) - 1:
        return _swap(message, row.variants[index - 1])
    return _adjusted(message, values[0], values[index])


# ---------------------------------------------------------------- running calls


async def _raised(call: Callable[[], object]) -> BaseException | None:
    try:
        result = call()
        if inspect.iscoroutine(result):
            await result
    except Exception as exc:
        return exc
    return None


def _at_once(call: Callable[[], object]) -> Call:
    """Make the call with no dispatcher running."""

    async def run() -> BaseException | None:
        return await _raised(call)

    return run


def _on_running(call: Callable[[Any], object], **config: Any) -> Call:
    """Make the call on a running dispatcher (of one worker, unless `config` says otherwise)."""

    async def run() -> BaseException | None:
        async with asyncpool.Dispatcher(**{"workers": 1, **config}) as dispatcher:
            return await _raised(lambda: call(dispatcher))

    return run


def _in_state(state: str, call: Callable[[Any], object]) -> Call:
    """Make the call on a dispatcher that is "not started", "closing" or "closed"."""

    async def run() -> BaseException | None:
        dispatcher = asyncpool.Dispatcher(workers=1)
        if state == "closed":
            async with dispatcher:
                pass
        if state != "closing":
            return await _raised(lambda: call(dispatcher))
        # A job makes the call: close() stops accepting before it first waits,
        # and the gate opens only after that, so the job runs while it closes.
        caught: list[BaseException | None] = []
        gate = asyncio.Event()

        async def probe() -> None:
            await gate.wait()
            caught.append(await _raised(lambda: call(dispatcher)))

        await dispatcher.start()
        await dispatcher.submit(probe)
        asyncio.get_running_loop().call_soon(gate.set)
        await dispatcher.close()
        return caught[0]

    return run


def _after_fail_fast(method: str, *, closed: bool) -> Call:
    """Submit to a `fail_fast` dispatcher after a job failed, while it closes or once closed."""

    async def run() -> BaseException | None:
        dispatcher = asyncpool.Dispatcher(workers=1, fail_fast=True)
        await dispatcher.start()  # not `async with`: fail_fast would cancel its body
        failed = await dispatcher.submit(_fails)
        await asyncio.wait([failed])
        assert isinstance(failed.exception(), ValueError)
        error = None
        if not closed:
            error = await _raised(lambda: getattr(dispatcher, method)(fetch, URL))
        with pytest.raises(ExceptionGroup):  # the failure, raised by close()
            await dispatcher.close()
        if closed:
            error = await _raised(lambda: getattr(dispatcher, method)(fetch, URL))
        return error

    return run


def _job_failure(code: str) -> Call:
    """Submit the page's example call; return what the job's handle fails with."""

    async def run() -> BaseException | None:
        async with asyncpool.Dispatcher(workers=1) as dispatcher:
            handle = await _eval("d." + code, d=dispatcher)
            await asyncio.wait([handle])
            return handle.exception()  # type: ignore[no-any-return]

    return run


async def _first(results: AsyncIterator[Any]) -> Any:
    async with contextlib.aclosing(results) as items:  # type: ignore[type-var]
        return await anext(items)


def _submitter(method: str, *args: Any, **kwargs: Any) -> Callable[[Any], object]:
    return lambda d: getattr(d, method)(*args, **kwargs)


def _evaluating(code: str) -> Callable[[Any], object]:
    """The page's example call `code`, made on the dispatcher it is given."""
    return lambda d: _eval("d." + code, d=d)


def _mapping(**options: Any) -> Callable[[Any], object]:
    return lambda d: d.map(_double, [1], **options)


def _resizing(workers: Any) -> Callable[[Any], object]:
    return lambda d: d.resize(workers)


SUBMITS = ("submit", "submit_nowait")


# ------------------------------------------------------- rows turned into calls by value


def _by_value(section: str, name: str | None, value: Any) -> Call | None:
    """How a section passes one value of a parameter; None if it has no such rule."""
    if section == "Dispatcher" and name:
        return _at_once(lambda: asyncpool.Dispatcher(**{name: value}))
    if section == "Retry" and name:
        return _at_once(lambda: asyncpool.Retry(**{name: value}))
    if section == "close" and name:
        return _on_running(lambda d: d.close(**{name: value}))
    if section == "map" and name:
        return _on_running(lambda d: d.map(_double, [1], **{name: value}))
    if section == "resize" and name is None:
        return _on_running(lambda d: d.resize(value))
    return None


def _code_list(cell: str) -> list[str] | None:
    """The items of a cell that is nothing but a list of code: "`0`, `-3`"."""
    if re.fullmatch(r"`[^`]+`(?:, `[^`]+`)*", cell):
        return re.findall(r"`([^`]+)`", cell)
    return None


def _cases_by_value(row: Row) -> list[Case] | None:
    items = _code_list(row.what)
    if items is None:
        return None
    if row.name:
        names = _code_list(row.name)
        if names is None or not all(n.isidentifier() for n in names):
            return None
        texts = items
    else:
        keywords = [re.fullmatch(r"([a-z_]\w*)=(.+)", item) for item in items]
        if all(keywords) and len({k.group(1) for k in keywords if k}) == 1:
            names = [keywords[0].group(1)] if keywords[0] else []
            texts = [k.group(2) for k in keywords if k]
        elif not any(keywords):
            names, texts = [], items
        else:
            return None
    values = [_eval(text) for text in texts]
    cases: list[Case] = []
    for j, name in enumerate(names or [None]):
        message = row.message if j == 0 or name is None else row.message.replace(names[0], name, 1)
        for i, (text, value) in enumerate(zip(texts, values, strict=True)):
            run = _by_value(row.section, name, value)
            if run is None:
                return None
            case_id = "-".join(part for part in (row.section, name, text) if part)
            cases.append(row.case(case_id, run, _expect(row, values, i, message)))
    return cases


# ------------------------------------------------- rows turned into calls by example call


def _literal_argument(code: str) -> object:
    try:
        return ast.literal_eval(code[code.index("(") + 1 : -1])
    except (ValueError, SyntaxError):
        return _UNKNOWN


def _cases_by_call(row: Row) -> list[Case] | None:
    function = {RUNTIME: "submit"}.get(row.section, row.section)
    calls = [
        code
        for code in re.findall(r"`([^`]+)`", row.what)
        if re.fullmatch(rf"{re.escape(function)}\(.*\)", code)
    ]
    if not calls:
        return None
    values = [_literal_argument(code) for code in calls]
    cases: list[Case] = []
    for i, code in enumerate(calls):
        message = _expect(row, values, i)
        if row.section in ("Dispatcher", "as_completed"):
            run = _at_once(functools.partial(_eval, "asyncpool." + code))
            cases.append(row.case(code, run, message))
        elif row.section in ("map", "close"):
            run = _on_running(_evaluating(code))
            cases.append(row.case(code, run, message))
        elif row.section == "submit":
            for method in SUBMITS:
                call = method + code[len("submit") :]
                run = _on_running(_evaluating(call))
                # Python's own message names the method that was called.
                said = message.replace("Dispatcher.submit(", f"Dispatcher.{method}(")
                cases.append(row.case(call, run, said))
        elif row.section == RUNTIME:
            cases.append(row.case(f"runs-{code}", _job_failure(code), message))
        else:
            return None
    return cases


# ---------------------------------------------------------------- rows mapped by hand


def _option_cases(row: Row, option: str, texts: Sequence[str] | None = None) -> list[Case]:
    """submit and submit_nowait with one bad per-job option, each value listed or given."""
    if texts is None:
        listed = _code_list(row.what.rpartition(": ")[2])
        assert listed, f"no values in {row.what!r}"
        texts = [text.removeprefix(f"{option}=") for text in listed]
    values = [_eval(text) for text in texts]
    return [
        row.case(
            f"{method}-{option}-{text}",
            _on_running(_submitter(method, fetch, URL, **{option: value})),
            _expect(row, values, i),
        )
        for method in SUBMITS
        for i, (text, value) in enumerate(zip(texts, values, strict=True))
    ]


def _state_cases(
    row: Row, prefix: str, call: Callable[[Any], object], messages: dict[str, str]
) -> list[Case]:
    return [
        row.case(f"{prefix}-{state.replace(' ', '-')}", _in_state(state, call), message)
        for state, message in messages.items()
    ]


def _submit_states(row: Row, state: str) -> list[Case]:
    return [
        row.case(
            f"{method}-{state.replace(' ', '-')}", _in_state(state, _submitter(method, fetch, URL))
        )
        for method in SUBMITS
    ]


def _not_callable_process(row: Row) -> list[Case]:
    return [row.case(f"{m}-BadJob()", _on_running(_submitter(m, BadJob()))) for m in SUBMITS]


def _used_coroutine(row: Row) -> list[Case]:
    async def finished(method: str, d: Any) -> None:
        coro = fetch(URL)
        await coro
        result = getattr(d, method)(coro)
        if inspect.iscoroutine(result):
            await result

    def closed(method: str, d: Any) -> object:
        coro = fetch(URL)
        coro.close()
        return getattr(d, method)(coro)

    return [
        case
        for m in SUBMITS
        for case in (
            row.case(f"{m}-finished-coroutine", _on_running(functools.partial(finished, m))),
            row.case(f"{m}-closed-coroutine", _on_running(functools.partial(closed, m))),
        )
    ]


def _future_or_task(row: Row) -> list[Case]:
    def future(method: str, d: Any) -> object:
        loop = asyncio.get_running_loop()
        # The page shows the plain repr; in debug mode (as the tests run) a
        # future's repr also says where it was created.
        debug = loop.get_debug()
        loop.set_debug(False)
        try:
            waiting = loop.create_future()
        finally:
            loop.set_debug(debug)
        return getattr(d, method)(waiting)

    async def task(method: str, d: Any) -> None:
        running = asyncio.ensure_future(asyncio.Event().wait())
        try:
            result = getattr(d, method)(running)
            if inspect.iscoroutine(result):
                await result
        finally:
            running.cancel()
            await asyncio.wait([running])

    return [
        case
        for m in SUBMITS
        for case in (
            row.case(f"{m}-Future", _on_running(functools.partial(future, m))),
            row.case(
                f"{m}-Task", _on_running(functools.partial(task, m)), _through(row.message, "got ")
            ),
        )
    ]


def _fail_fast(row: Row) -> list[Case]:
    return [
        case
        for m in SUBMITS
        for case in (
            row.case(f"{m}-after-fail_fast", _after_fail_fast(m, closed=False)),
            row.case(
                f"{m}-after-fail_fast-closed",
                _after_fail_fast(m, closed=True),
                _swap(row.message, row.variants[0]),
            ),
        )
    ]


def _queue_full(row: Row) -> list[Case]:
    def fill(d: Any) -> None:
        # The first job goes straight to the idle worker's inbox; submit_nowait
        # never yields, so the worker takes nothing more: the next two fill
        # the queue, and the fourth finds queue_size jobs waiting.
        for _ in range(4):
            d.submit_nowait(_noop)

    return [row.case("submit_nowait-queue-full", _on_running(fill, queue_size=2))]


def _unpicklable(row: Row) -> list[Case]:
    return [
        case
        for m in SUBMITS
        for case in (
            row.case(
                f"{m}-process-lambda", _on_running(_submitter(m, a_lambda), sync_in="process")
            ),
            row.case(
                f"{m}-process-lock",
                _on_running(_submitter(m, blocking, threading.Lock()), sync_in="process"),
                _through(row.message, "<function "),
            ),
        )
    ]


def _map_bad_option(row: Row) -> list[Case]:
    priority = ROW[("submit", '`priority=` that is not an `int`: `1.5`, `True`, `"1"`')]
    return [
        row.case("map-timeout-0", _on_running(lambda d: d.map(_double, [1], timeout=0))),
        # "as for submit": priority="x" is the submit row's TypeError.
        Case(
            'map-priority-"x"',
            _on_running(lambda d: d.map(_double, [1], priority="x")),
            priority.error,
            _adjusted(priority.message, 1.5, "x"),
        ),
    ]


def _map_window(row: Row) -> list[Case]:
    values = [0, -1]
    return [
        row.case(
            f"map-window-{value}",
            _on_running(_mapping(window=value)),
            _expect(row, values, i),
        )
        for i, value in enumerate(values)
    ]


def _resize_below_one(row: Row) -> list[Case]:
    values = [0, -1]
    return [
        row.case(
            f"resize-{value}",
            _on_running(_resizing(value)),
            _expect(row, values, i),
        )
        for i, value in enumerate(values)
    ]


def _closed_states(row: Row, prefix: str, call: Callable[[Any], object]) -> list[Case]:
    closing, closed = row.variants
    return _state_cases(
        row,
        prefix,
        call,
        {
            "not started": row.message,
            "closing": _swap(row.message, closing),
            "closed": _swap(row.message, closed),
        },
    )


def _start_when_closed(row: Row) -> list[Case]:
    return _state_cases(
        row,
        "start",
        lambda d: d.start(),
        {"closing": _through(row.message, "is "), "closed": row.message},
    )


HANDLED: dict[tuple[str, str], Callable[[Row], list[Case]]] = {
    ("Dispatcher", "`rate_burst` | `5` without `rate_limit`"): lambda row: [
        row.case("Dispatcher-rate_burst-5", _at_once(lambda: asyncpool.Dispatcher(rate_burst=5)))
    ],
    ("Dispatcher", "other keywords | `foo=1`"): lambda row: [
        row.case("Dispatcher-foo=1", _at_once(lambda: _eval("asyncpool.Dispatcher(foo=1)")))
    ],
    ("submit", "an object whose `process` is not callable"): _not_callable_process,
    ("submit", "a coroutine object that already ran or was closed"): _used_coroutine,
    (
        "submit",
        "an awaitable that is not a coroutine object (a `Future`, a `Task`)",
    ): _future_or_task,
    ("submit", "`timeout=` of 0 or less, or NaN"): lambda row: _option_cases(
        row, "timeout", ["0", "-1", "math.nan"]
    ),
    ("submit", '`timeout=` that is not a number: `"1"`, `True`'): lambda row: _option_cases(
        row, "timeout"
    ),
    ("submit", "`retry=` that is not a `Retry` or `None`: `retry=3`"): lambda row: _option_cases(
        row, "retry"
    ),
    ("submit", '`priority=` that is not an `int`: `1.5`, `True`, `"1"`'): lambda row: _option_cases(
        row, "priority"
    ),
    ("submit", "`key=` that is not hashable: `[1]`, `{}`"): lambda row: _option_cases(row, "key"),
    ("submit", "anything, while the dispatcher is not started"): lambda row: _submit_states(
        row, "not started"
    ),
    ("submit", "anything, while it is closing"): lambda row: _submit_states(row, "closing"),
    ("submit", "anything, once it is closed"): lambda row: _submit_states(row, "closed"),
    ("submit", "anything, after a job failed with `fail_fast=True`"): _fail_fast,
    (
        "submit",
        "anything to `submit_nowait`, when `queue_size` jobs already wait (or their places "
        "are promised to submitters waiting in `submit`)",
    ): _queue_full,
    (
        "submit",
        'with `sync_in="process"`, a blocking job or arguments that cannot be pickled '
        "(a lambda, a lock)",
    ): _unpicklable,
    ("map", "`window=0` (or less)"): _map_window,
    ("map", 'a job option with a bad value: `timeout=0`, `priority="x"`'): _map_bad_option,
    ("map", "iterating a map of a dispatcher that is not running"): lambda row: _closed_states(
        row, "map", lambda d: _first(d.map(_double, [1]))
    ),
    ("resize", "`0` (or less)"): _resize_below_one,
    ("resize", "anything, while the dispatcher is not running"): lambda row: _closed_states(
        row, "resize", lambda d: d.resize(2)
    ),
    ("close", "other keywords | `force=True`"): lambda row: [
        row.case("close-force=True", _on_running(lambda d: _eval("d.close(force=True)", d=d)))
    ],
    ("start", "the dispatcher is already running"): lambda row: [
        # The page's repr shows the default of 8 workers.
        row.case("start-running", _on_running(lambda d: d.start(), workers=8))
    ],
    ("start", "it is closing or closed"): _start_when_closed,
}

# Rows deliberately not walked, with the reason. Empty: every row is walked.
SKIPPED: dict[tuple[str, str], str] = {}

# Cases where the code does not do what the page says: case id -> reason (none so far).
WRONG: dict[str, str] = {}


def _cases(row: Row) -> list[Case]:
    if row.key in SKIPPED:
        return [
            Case(
                f"{row.section}-skipped-{row.label}",
                _at_once(lambda: None),
                Exception,
                "",
                skip=SKIPPED[row.key],
            )
        ]
    handler = HANDLED.get(row.key)
    cases = handler(row) if handler else _cases_by_value(row) or _cases_by_call(row)
    if cases:
        return cases
    return [
        Case(
            f"UNHANDLED-{row.section}-{row.label}",
            _at_once(lambda: None),
            Exception,
            "",
            unhandled=f"row {row.label!r} of section {row.section!r} is not walked: map it in "
            "HANDLED or list it in SKIPPED with a reason",
        )
    ]


def _params() -> list[Any]:
    params = []
    for case in (case for row in ROWS for case in _cases(row)):
        marks: list[pytest.MarkDecorator] = []
        if case.skip:
            marks.append(pytest.mark.skip(reason=case.skip))
        if case.id in WRONG:
            marks.append(pytest.mark.xfail(strict=True, reason=WRONG[case.id]))
        params.append(pytest.param(case, id=case.id, marks=marks))
    return params


PARAMS = _params()


@pytest.mark.parametrize("case", PARAMS)
async def test_bad_input_catalogue_row_raises_as_documented(case: Case) -> None:
    """Every refused value on the bad-input page raises the documented exception and message."""
    if case.unhandled:
        pytest.fail(case.unhandled)
    error = await case.run()
    assert error is not None, f"nothing raised; the page says {case.error.__name__}"
    assert isinstance(error, case.error), f"raised {error!r}, the page says {case.error.__name__}"
    assert str(error).startswith(case.message), f"{str(error)!r} does not start {case.message!r}"


def test_bad_input_catalogue_mapping_matches_page() -> None:
    """The walker reads every section, and each hand-mapped or skipped row is still on the page."""
    sections = {row.section for row in ROWS}
    expected = {"Dispatcher", "submit", RUNTIME, "map", "resize", "Retry", "as_completed"}
    assert expected | {"close", "start"} <= sections
    stale = (HANDLED.keys() | SKIPPED.keys()) - ROW.keys()
    assert not stale, f"mapped rows no longer on the page: {sorted(stale)}"
    ids = [param.id for param in PARAMS]
    assert len(ids) == len(set(ids)), "two cases share an id"
    assert set(WRONG) <= set(ids), "WRONG names a case that does not exist"
