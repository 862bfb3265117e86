"""The paper's Fig. 5 (§6.2): accuracy under Wasserstein attack of a standard, an adversarially trained and a
Wasserstein-smoothed ``wong_mnist``, over nominal ε and over the exact W1 of the examples found.

A declaration on :mod:`.engine`. Three models (:data:`MODELS`), each trained here exactly as ``wsmooth train``
would, or taken from a checkpoint the user gives: ``standard`` (plain training), ``adversarial`` (Wasserstein
adversarial training of the plain model; flow-space PGD by default, the one practical on a CPU) and ``smoothed``
(flow-laplace noise training at σ, attacked as the smoothed classifier). Each is attacked on the first
``max_images`` held-out digits with each method of ``methods`` in the paper's growing-ε mode, writing the log
``wsmooth attack`` writes (:class:`~.steps.Attack`). Accuracy under attack at r
(:func:`wsmooth_ext.analysis.attack.accuracy_under_attack`): the % of the digits correct before the attack that it
did not break within r, by nominal ε (each method's own units) or by the exact W1 of the example found.

Output folder: ``MODEL.pt`` for each trained model, ``MODEL_METHOD.tsv`` attack logs, their adversarial examples
``adversarial/MODEL_METHOD.pt`` (as ``wsmooth attack --save-adv`` saves them), ``summary.md`` (the tables and the
command that reproduces them), ``fig5.png`` (one row of curves per method: vs nominal ε and vs exact W1),
``examples_MODEL.png`` (each model's fooled digits of smallest exact W1 over its attacks: clean | adversarial |
difference with the optimal transport plan, as ``wsmooth show attack`` draws them; no picture for a model no
attack fooled) and ``experiment.json`` (the settings and the given checkpoints' hashes).
"""

from __future__ import annotations

from functools import partial

from ..attacks.registry import ATTACKS
from ..training.adversarial import eps_units
from ..infra import options as shared
from ..infra.options import POSITIVE, integers
from . import _checks, options
from .engine import Experiment, Report
from .options import ARCH, Option
from .steps import Attack, Given, Run, Train

NAME = "fig5"
PLOT_FILE = "fig5.png"
ADV_FOLDER = "adversarial"  # MODEL_METHOD.pt: each attack's examples, as `wsmooth attack --save-adv` saves them
EXAMPLES = 4  # rows of a model's picture of its nearest adversarial examples
NOISE = "flow-laplace"  # the paper's smoothing noise
MODELS = ("standard", "adversarial", "smoothed")
ATTACK_METHODS = tuple(ATTACKS)  # the attack registry (wsmooth_ext.attacks.registry)
ADV_TRAININGS = ATTACK_METHODS  # adversarial training takes every attack of the registry (training/adversarial.py)
DEFAULT_GRID = (0.05, 0.1, 0.2, 0.3, 0.5, 1.0)

M = "models (default: train all three here)"
OPTIONS = (
    Option("methods", ("sinkhorn", "frank-wolfe"), f"attacks, among {', '.join(ATTACK_METHODS)}",
           rule=partial(_checks.names, allowed=ATTACK_METHODS, noun="attack"), metavar="M",
           default_note="; sinkhorn is the paper's", group=options.A),
    *options.TRAINING,
    Option("adv_training", "flow", "attack used to train the adversarial model (wsmooth train --adversarial)",
           choices=ADV_TRAININGS, group=M),
    Option("adv_eps", 0.3, f"its final radius, in its own units (flow: {eps_units('flow')})", POSITIVE, group=M),
    Option("adv_eps_warmup", 10, "epochs over which it grows geometrically from --adv-eps/10", integers(0),
           group=M),
    Option("adv_attack_steps", 10, "attack steps per training batch", integers(1), group=M),
    Option("sigma", 0.01, "flow-laplace noise of the smoothed model, std per flow edge, mass-normalized",
           rule=options.sigma, default_note=", the paper's Fig. 5", group=M),
    options.images(100),
    *options.ATTACK_SCHEDULE,
    *(Option(name, None, f"attack this checkpoint as the {name} model", rule=options.checkpoint_file, kind=str,
             optional=True, metavar="CKPT", default_note=": train it here", path=True, group=M) for name in MODELS),
)


def _check(s):
    from ..infra.ranges import check_grown_radius, check_soft_samples
    from ..core.smooth import check_vote_budget

    check_vote_budget("--n-test", s.n_test)
    check_grown_radius(s.eps0, s.eps_factor, s.max_iter, s.eps_every)  # the limits `wsmooth attack` checks
    check_soft_samples(s.max_iter, s.n_grad)
    return s


def _training(name: str, s) -> tuple[dict, str]:
    """train() keywords of a model trained here, and how it is trained in words."""
    if name == "standard":
        return {"noise": "none", "sigma": s.sigma}, "plain training (no noise)"
    if name == "adversarial":
        return ({"noise": "none", "sigma": s.sigma, "adversarial": s.adv_training, "adv_eps": s.adv_eps,
                 "adv_eps_warmup": s.adv_eps_warmup, "adv_attack_steps": s.adv_attack_steps},
                f"{s.adv_training} adversarial training, eps {s.adv_eps:g} ({eps_units(s.adv_training)}), grown from "
                f"eps/10 over {s.adv_eps_warmup} epochs, {s.adv_attack_steps} attack steps per batch")
    return {"noise": NOISE, "sigma": s.sigma}, f"{NOISE} noise training, sigma {s.sigma:g}; attacked as the smoothed classifier"


def _plan(s, extras) -> list:
    runs = []
    for name in MODELS:
        smoothed, path = name == "smoothed", getattr(s, name)
        model = (Given(name, name, path, f"--{name}", noise=(NOISE, s.sigma) if smoothed else None) if path
                 else Train(name, name, *_training(name, s)))
        smoothing = {"noise": NOISE, "sigma": s.sigma, "n_grad": s.n_grad, "n_test": s.n_test, "alpha": s.alpha,
                     "seed": s.seed} if smoothed else None
        runs.append(Run(model, tuple(Attack(
            log=f"{name}_{m}.tsv", label=f"{name} ({'smoothed classifier' if smoothed else 'base model'}), {m}",
            method=m, eps0=s.eps0, eps_factor=s.eps_factor, eps_every=s.eps_every, max_iter=s.max_iter,
            smoothing=smoothing, batch=extras["attack_batch"], adv=f"{ADV_FOLDER}/{name}_{m}.pt") for m in s.methods)))
    return runs


def format_models(runs) -> str:
    from ..analysis.tables import format_table as markdown, pct

    header = ["model", "checkpoint", "how", "clean test acc. % (base model, all held-out)", "training s"]
    body = [[m.name, f"`{m.checkpoint.name if not m.given else m.checkpoint}`", m.how,
             pct(m.test_accuracy), "—" if m.training_seconds is None else f"{m.training_seconds:.1f}"]
            for m in (run.model for run in runs)]
    return markdown(header, body, markdown=True)


def examples_file(model: str) -> str:
    return f"examples_{model}.png"


def example_figure(examples: list, model: str, methods, sigma: float):
    """The Figure of ``examples_MODEL.png``: ``examples`` (:func:`~wsmooth_ext.analysis.pictures.nearest_fooled`
    of the model's attacks) as ``wsmooth show attack`` draws them, titled with the model and its attacks."""
    from ..analysis.pictures import attack_figure

    target = f"the smoothed classifier ({NOISE}, σ {sigma:g})" if model == "smoothed" else "the base model"
    return attack_figure(examples, title=f"fig5, {model} model attacked as {target}: the digits fooled with the "
                         f"smallest exact W1, each by the attack that found it nearest ({', '.join(methods)})")


def _draw_examples(examples, model, methods, sigma, path) -> None:
    from ..analysis.pictures import save_figure

    save_figure(example_figure(examples, model, methods, sigma), path, overwrite=True)  # the engine's partial file


def _example_pictures(result) -> tuple[dict, str]:
    """({file: draw} of the models some attack fooled, the summary's paragraph on them, one line per model)."""
    from ..analysis.pictures import nearest_fooled

    s, plots, lines = result.settings, {}, []
    for finished in result.runs:
        name = finished.model.name
        saved = {step.method: (log, step.saved_adv(result.out)) for step, log in zip(finished.run.evaluations,
                                                                                      finished.logs)}
        examples = nearest_fooled(saved, EXAMPLES)
        if examples:
            plots[examples_file(name)] = partial(_draw_examples, examples, name, s.methods, s.sigma)
            line = (f"[`{examples_file(name)}`]({examples_file(name)}): its {len(examples)} fooled digits of "
                    f"smallest exact W1 (idx {', '.join(str(e.idx) for e in examples)})")
        else:
            line = "no attack fooled a digit it classified correctly, so there is no picture"
        lines.append(f"- {name}: {line}.")
    text = ("Nearest adversarial examples, per model: of every digit it classified correctly and some attack fooled, "
            "the example of smallest exact W1 over its attacks; clean | adversarial | adversarial − clean with the "
            "largest moves of the optimal transport plan as arrows (as `wsmooth show attack` draws them; all "
            f"examples in `{ADV_FOLDER}/MODEL_METHOD.pt`, which `wsmooth show attack` reads with its log).\n\n"
            + "\n".join(lines) + "\n")
    return plots, text


def _report(result) -> Report:
    from ..analysis.attack import format_attack_tables, plot_attacks_by_method

    s, grid = result.settings, result.extras["grid"]
    logs = {(run.model.name, m): log for run in result.runs for m, log in zip(s.methods, run.logs)}
    tables = format_attack_tables(logs, grid)
    trained = any(not run.model.given for run in result.runs)
    pictures, pictures_text = _example_pictures(result)
    text = (f"# Fig. 5: accuracy under Wasserstein attack ({NAME})\n\n"
            f"`{ARCH}` models on {s.dataset}"
            + (f"; trained here on {result.train_count} training digits ({options.training_recipe(s)})"
               if trained else "")
            + ":\n\n" + format_models(result.runs) + "\n\n"
            f"Attacked: the first {s.max_images} held-out {s.dataset} images, each model with each attack in the "
            f"paper's growing-ε mode (ε from {s.eps0:g}, ×{s.eps_factor:g} every {s.eps_every} iterations for the "
            f"digits still standing, {s.max_iter} iterations; the attacks' own parameters at `wsmooth attack`'s "
            f"defaults). The smoothed model is attacked as the smoothed classifier ({NOISE}, σ {s.sigma:g}): "
            f"gradients of the soft smoothed classifier over {s.n_grad} fresh samples, success when the hard "
            f"smoothed prediction over {s.n_test} samples (binomial test at α {s.alpha:g}) is wrong or abstains.\n\n"
            "Accuracy under attack at r: % of the attacked digits classified correctly before the attack and not "
            "broken within r. A digit is broken at nominal ε ≤ r when ε in force at its first flip is ≤ r, and at "
            "W1 ≤ r when the example that fooled it (the first fooling iterate) has exact W1 ≤ r (L2 ground metric, "
            "linear program, both images mass-normalized); misclassified (smoothed: abstained on) before the attack "
            "= broken at 0; never fooled = never broken. Nominal ε is in each attack's own units (sinkhorn: "
            "entropic-ball radius; frank-wolfe, pgd-dual: W1 bound, L2 ground; flow: L1 norm of the flow plan), so "
            "only the W1 columns compare attacks. Medians over all digits (0 / inf as above); W1/ε: median ratio "
            "over the fooled digits; s/digit: attack seconds per digit.\n\n"
            f"{tables}\n\n"
            f"Curves: `{PLOT_FILE}`. Attack logs: `MODEL_METHOD.tsv` (`wsmooth analyze` reads them); checkpoints "
            f"of the models trained here: `MODEL.pt`.\n\n" + pictures_text)
    return Report(tables, text, {PLOT_FILE: partial(plot_attacks_by_method, logs, MODELS, s.methods, grid),
                                 **pictures})


EXPERIMENT = Experiment(
    NAME, OPTIONS, _plan, _report, check=_check, models_first=True, unit="digits",
    # --quick: a miniature that finishes in a few minutes on a 2-core CPU (OMP_NUM_THREADS=1)
    quick={"epochs": 6, "adv_eps_warmup": 3, "max_images": 20, "eps0": 0.1, "eps_factor": 1.5, "eps_every": 5,
           "max_iter": 30, "n_grad": 16, "n_test": 1000},
    view=Option("grid", DEFAULT_GRID, "table columns: nominal eps and exact W1 values, mass-normalized",
                rule=partial(_checks.radii, unit="mass-normalized"), metavar="R"),
    tuning=(shared.ATTACK_BATCH.but(default=20, help="digits attacked together; changes no result beyond float "
                                    "rounding", metavar="B", group=options.A,
                   # a smoothed model's gradient holds n_grad noisy copies of every digit of the batch
                   images_at_once=lambda s, batch: batch * s.n_grad),))
