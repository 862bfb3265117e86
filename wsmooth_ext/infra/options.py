"""The package's one option type: :class:`Option` says everything there is to say about one setting — its name,
default, range or choices, units, help, how a value is spelled (``spell``) and whether ``--resume`` must keep
it — and everything else derives from it: the argparse argument (:meth:`Option.add_to`), the check with its
one message (:meth:`Option.check`), ``--help``, ``experiment.json``, a checkpoint's ``train_args`` and a log's
identity.

Where an option is declared:

- :data:`SHARED` here: the quantities several commands and the experiments take (the seed, the smoothed
  classifier's samples and level, image selection, batch sizes); a command that takes one adds it with its own
  default and help words (:meth:`Option.but`), never its own range.
- ``training/options.py``: the training run's options (epochs, optimizer, batch, ...), shared by
  ``wsmooth train``, the experiments and :func:`wsmooth_ext.training.train`; a method's hyper-parameters are
  Options in its dataclass (``training/params.py``).
- ``attacks/registry.py``: the attacks' settings.
- ``experiments/options.py``: the experiments' own (and the blocks they share).

Support module: imports only :mod:`.ranges`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable

from .ranges import MAX_RADIUS, Range

# whether `--resume` must keep an option (a recorded one): KEEP refuses a change; FREE lets it change (the
# epochs of a run being extended, the number of processes)
KEEP, FREE = "keep", "free"


@dataclass(frozen=True)
class Option:
    """One setting: a keyword of the Python API, a field of an experiment's settings and the option
    ``--name`` (dashes for underscores) of the commands that take it.

    ``range`` (numbers; integers when ``range.integer``) or ``choices`` (words) say what is allowed; ``optional``:
    None is allowed too (it then means ``none``, spelled so in ``--help`` and messages: "each method's", "all").
    ``units``: of a number, named in messages ("mass-normalized units"). ``note``: why a value outside the range
    is refused, said in the message. ``default_note``: said right after the default in ``--help``.
    ``resume``: :data:`KEEP` (a resumed run must have the same value; training's ``RESUME_FIXED`` derives from
    it) or :data:`FREE`. ``group``: the ``--help`` section. ``path``: names a checkpoint whose hash the
    experiment records. ``images_at_once``: (settings, value) -> dataset images held at once (a batch size),
    checked before the first step. ``kind``: argparse's parser of one word (default: from the range, the choices
    or the default's type). ``rule``: the check of what a range cannot say, before the range's.
    """

    name: str
    default: Any = None
    help: str = ""
    range: Range | None = None
    choices: tuple | None = None
    optional: bool = False
    units: str = ""
    note: str = ""
    default_note: str = ""
    metavar: str | None = None
    none: str = "none"
    aliases: tuple[str, ...] = ()
    cli: str | None = None  # the command-line spelling where it is not the name's (--samples for n)
    resume: str = KEEP
    group: str | None = None
    path: bool = False
    images_at_once: Callable[[Any, Any], int] | None = None
    kind: Callable | None = None
    # what a range or choices cannot say (a list of names, a file that must exist): (name, value) -> the value
    # normalized, or ValueError naming the option; the range or choices are checked after it
    rule: Callable[[str, Any], Any] | None = None

    @property
    def flag(self) -> str:
        """The command-line spelling: ``--n-grad`` for ``n_grad``."""
        return self.cli or flag(self.name)

    @property
    def integer(self) -> bool:
        return self.range is not None and self.range.integer

    def but(self, **changes) -> "Option":
        """This option with other words or default for one command (``help``, ``default``, ``metavar``, ...):
        the range, the choices and the name stay those of the one declaration."""
        return dataclasses.replace(self, **changes)

    def text(self) -> str:
        """What is allowed, in words: 'an integer in [1, 1000]', 'a finite number > 0', 'one of sgd, adam'."""
        if self.range is not None:
            return self.range.text()
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        return "any value"

    def spell(self, value) -> str:
        """``value`` as ``--help``, messages and command lines spell it (None: ``none``; tuples comma-separated)."""
        return format_value(value, self.none)

    def allows(self, value) -> bool:
        if value is None:
            return self.optional
        if self.range is not None:
            return self.range.contains(value)
        if self.choices is not None:
            return value in self.choices
        return True

    def check(self, value, name: str | None = None, owner: str = ""):
        """``value`` normalized (an int or float for a number), or ValueError: '{name} must be {text} ({units})
        for {owner} ({note}), got {value!r}'. ``name``: how the message names it (default ``--flag``; the
        Python API passes the keyword)."""
        if self.rule is not None:
            value = self.rule(self.name, value)
            if value is None or isinstance(value, tuple):
                return value  # the rule allowed None, or checked every element of a list
        if not self.allows(value):
            raise ValueError(self.refusal(value, name, owner))
        if value is None or self.range is None:
            return value
        return int(value) if self.range.integer else float(value)

    def refusal(self, value, name: str | None = None, owner: str = "") -> str:
        """The one message that refuses ``value``."""
        units = f" ({self.units})" if self.units and not self.integer and self.range is not None else ""
        whose = f" for {owner}" if owner else ""
        why = f" ({self.note})" if self.note else ""
        return f"{name or self.flag} must be {self.text()}{units}{whose}{why}, got {value!r}"

    def parse(self, word: str):
        """The argparse ``type=`` of one word: integers also as '1e6' (then checked whole by :meth:`check`)."""
        if self.kind is not None:
            return self.kind(word)
        if self.range is not None:
            return _parse_integer(word) if self.range.integer else float(word)
        return word

    def add_to(self, parser, words: str | None = None, **kwargs):
        """Add the option to ``parser`` (an ArgumentParser or a group of one): its help (``words``, default
        '{help} (default D)', then what is allowed), the word parser, the action that records the option string
        typed (so :func:`check_options` names it as typed, and checks it after parsing). ``kwargs``: argparse's,
        over the option's own (``default``, ``metavar``, ``dest``)."""
        known = parser.get_default("checked_options") or ()  # argument groups share their parser's defaults
        parser.set_defaults(checked_options=tuple(known) + (self,))
        text = self.help_text(words)
        arguments = dict(default=self.default, metavar=self.metavar, help=text.replace("%", "%%"))
        if self.choices is not None and self.range is None:
            arguments["choices"] = self.choices
        else:
            arguments.update(type=_named(self.parse), action=_Typed)
        arguments.update(kwargs)
        if arguments.get("dest") is None:
            arguments["dest"] = self.name
        return parser.add_argument(self.flag, *self.aliases, **arguments)

    def help_text(self, words: str | None = None) -> str:
        """'{words}; {what is allowed}', ``words`` by default '{help} (default D{default_note})'."""
        words = f"{self.help} (default {self.spell(self.default)}{self.default_note})" if words is None else words
        return words + (f"; {self.text()}" if self.range is not None else "")


def format_value(value, none: str = "none") -> str:
    """A setting as the command line spells it (lists comma-separated, floats %g, None as ``none``)."""
    if isinstance(value, (tuple, list)):
        return ",".join(format_value(v, none) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return none if value is None else str(value)


def flag(name: str) -> str:
    """``--n-grad`` for ``n_grad``: the one place an option's spelling is made from its name."""
    return "--" + name.replace("_", "-")


def _named(parse):
    def word(text: str):
        return parse(text)

    word.__name__ = getattr(parse, "__name__", "value")
    return word


class _Typed(argparse.Action):
    """Stores the value and the option string the user typed (``--max`` or ``--max-images``), so that
    :func:`check_options` names the option as typed."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        typed = dict(getattr(namespace, "typed_options", None) or {})
        typed[self.dest] = option_string
        namespace.typed_options = typed


def check_options(args: argparse.Namespace) -> None:
    """Every option of ``args`` added with :meth:`Option.add_to` holds an allowed value (or None), or
    ValueError naming it as typed ('--max-images must be an integer in [1, 1000000000], got 0'). Run before
    anything is loaded."""
    typed = getattr(args, "typed_options", None) or {}
    for option in getattr(args, "checked_options", ()):
        value = getattr(args, option.name, None)
        if value is not None and not option.allows(value):
            raise ValueError(option.refusal(value, typed.get(option.name)))


def _parse_integer(word: str) -> int | float:
    try:
        return int(word)
    except ValueError:
        value = float(word)  # '1e8': checked against the range (and for being whole) by the caller
        return int(value) if math.isfinite(value) and value.is_integer() else value


def integers(low: int = 1, high: float = math.inf) -> Range:
    """The integers in [low, high]."""
    return Range(low, high, integer=True)


def numbers(low: float = 0.0, high: float = math.inf, **open_ends) -> Range:
    """The finite numbers in [low, high] (``low_open``/``high_open``: the bound excluded)."""
    return Range(low, high, **open_ends)


POSITIVE = Range(0.0, math.inf, low_open=True)
NON_NEGATIVE = Range(0.0, math.inf)

# --- the quantities several commands and the experiments take -------------------------------------------------

SEED = Option("seed", 0, "seed of the noise", Range(0, 2 ** 63, integer=True, high_open=True))
ALPHA = Option("alpha", 0.05, "failure probability of each result", Range(0, 1, low_open=True, high_open=True))
SIGMA = Option("sigma", None, "noise std per flow edge (or per pixel), mass-normalized units",
               Range(0, 1e4, low_open=True))  # noises.MAX_SIGMA (checked equal by the tests)
BATCH = Option("batch", None, "noisy images per forward pass", Range(1, 10 ** 7, integer=True))
SKIP = Option("skip", 1, "use every skip-th image", Range(1, 10 ** 9, integer=True))
MAX_IMAGES = Option("max_images", None, "at most M images", Range(1, 10 ** 9, integer=True), metavar="M",
                    aliases=("--max",), none="all")
N0 = Option("n0", 1000, "selection samples per image", Range(1, 2 ** 31, integer=True))
N = Option("n", 10000, "estimation samples per image", Range(1, 2 ** 31, integer=True), cli="--samples",
           aliases=("--n",))
# an attack's smoothed target
N_GRAD = Option("n_grad", 128, "noise samples per gradient", Range(1, 10 ** 5, integer=True))
N_TEST = Option("n_test", 10000, "noise samples per success test", Range(1, 2 ** 31, integer=True))
# an attack's radius and its growth
EPS = Option("eps", None, "fixed radius (mass-normalized units)", Range(0, MAX_RADIUS, low_open=True))
EPS0 = Option("eps0", 0.3, "initial radius, mass-normalized units", Range(0, MAX_RADIUS, low_open=True))
EPS_FACTOR = Option("eps_factor", 1.1, "radius growth factor", Range(1, 10))
EPS_EVERY = Option("eps_every", 10, "grow the radius every this many iterations", Range(1, 10 ** 6, integer=True))
MAX_ITER = Option("max_iter", 200, "attack iterations", Range(0, 10 ** 6, integer=True))
ATTACK_BATCH = Option("attack_batch", 100, "images attacked together", Range(1, 10 ** 5, integer=True))
RADII = Option("radii", None, "radii", Range(0, MAX_RADIUS))

SHARED: dict[str, Option] = {o.name: o for o in (
    SKIP, MAX_IMAGES, SEED, ALPHA, SIGMA, BATCH, N0, N, N_GRAD, N_TEST, EPS, EPS0, EPS_FACTOR, EPS_EVERY, MAX_ITER,
    ATTACK_BATCH, RADII)}
