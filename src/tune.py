"""Hyperparameter search with Optuna: each trial a run of its own, the study resumable and shareable.

    python -m src tune --config configs/tfidf.yaml --space configs/spaces/tfidf.yaml --trials 20 [key=value ...]
    python -m src tune --config configs/minilm-l6.yaml --space configs/spaces/encoder.yaml --trials 30 --folds 0-2
    python -m src tune ... --storage postgresql://user:pw@host/db    # several pods on one study, each this command

The space file maps dotted config keys to distributions (read with yaml.safe_load):
    tfidf.C: {low: 0.1, high: 10, log: true}        # float (int when low, high and step are whole numbers)
    lora.r: {low: 4, high: 32, step: 4}
    train.batch_size: {choices: [16, 32]}             # any values; lists (word_ngram) too
Trial n trains the config + `--folds` + the overrides + its sampled values as the run `<exp>-t<n>` (`<study>-t<n>`
with --study) through `src.pipeline.run`: a normal run folder, resumable (`runs` lists it). The objective is the
run's `data.metric` decided on the other folds (metrics.json `oof_crossfit`; one trained fold: the in-sample OOF
figure), maximized (log_loss minimized). Sampler TPE; transformer runs are pruned by a median pruner fed with the
evaluations of their first trained fold (step = that fold's training step, the same fold in every trial, so the
steps are comparable; a trial that resumes past that fold is never pruned). A pruned run stops as Ctrl-C stops one:
its folder keeps its config.yaml and checkpoints.
The study is `<checkpoints_dir>/<study>/study.db` (SQLite; --study defaults to `<exp>-tune`) or --storage (an
Optuna RDB URL). `--trials N`: the study ends with N finished (complete or pruned) trials, those from before
included, so a rerun after a stop does only the rest (machines sharing a study may overshoot N by the trials still
running then). A trial that fails (a UserError such as a diverged model, a GPU out of memory) is recorded failed and
the search goes on, unless FAILED_IN_A_ROW fail one after another. A trial whose process died is failed once its
heartbeat is older than GRACE_S and retried with the same values, resuming its own run folder (Ctrl-C: retried at
once). At the end: the trials, the best trial's settings (as overrides, and `<study>/best.yaml`), its run and
submission. Each trial trains in this process (one GPU); more GPUs or machines: one command each on one --storage.
"""

from __future__ import annotations

import dataclasses
import gc
import re
import shlex
import time
import warnings
from pathlib import Path

import yaml

from src import pipeline
from src.config import EXP_NAME, PATH_KEYS, Config, check_cli_overrides, check_exp, load_config, to_dict
from src.errors import ArgParser, UserError, cli
from src.fileio import make_dir, read_utf8, write_text
from src.folds import folds_for_run, parse_folds
from src.metrics import LOWER_IS_BETTER
from src.rundir import RunDir

HEARTBEAT_S, GRACE_S, MAX_RETRY = 60, 180, 2  # a RUNNING trial silent for GRACE_S is failed and retried (twice)
FAILED_IN_A_ROW = 3  # this many trials failing one after another (a UserError each) stop the command
RESERVED = ("data.", "folds.", "output.")  # what every trial shares (and exp, its name stem)


class Stopped(BaseException):
    """Raised by the pruning callback inside training: like Ctrl-C (not an Exception), so the run keeps its
    config.yaml and stays resumable; the objective turns it into optuna.TrialPruned."""


@dataclasses.dataclass
class Plan:
    """The checked search: the base config, the space (key -> Optuna distribution) and how each trial is made."""

    config: str | None
    overrides: list[str]
    folds: str | None
    base: Config
    space: dict
    stem: str = ""

    @property
    def metric(self) -> str:
        return self.base.data.metric

    @property
    def direction(self) -> str:
        return "minimize" if self.metric in LOWER_IS_BETTER else "maximize"

    def trial_config(self, sampled: list[str], exp: str) -> Config:
        """The base config (overrides, --folds) with `sampled` (key=value strings) as run `exp`."""
        cfg = load_config(self.config, [*self.overrides, *sampled, f"exp={exp}"])
        if self.folds is not None:
            cfg.folds.run = parse_folds(self.folds, cfg.folds.n_folds)
        return cfg

    def command(self, sampled: list[str], exp: str) -> str:
        """The `python -m src run` line that trains (or resumes) this trial's run."""
        args = [*(["--config", self.config] if self.config else []), *(["--folds", self.folds] if self.folds else []),
                *(o for o in self.overrides if not o.startswith("exp=")), *sampled, f"exp={exp}"]
        return "python -m src run " + " ".join(shlex.quote(x) for x in args)


def value_text(value) -> str:
    """A sampled value as an override's text (strings as they are, anything else as one line of YAML)."""
    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, width=10**9).removesuffix("\n...\n").strip()


def _number(spec: dict, name: str, where: str):
    """low/high/step as a number; YAML 1.1 reads `1e-5` as a string, taken as the float it means."""
    v = spec[name]
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise UserError(f"{where}: {name} must be a number, got {v!r}")
    return v


def distribution(key: str, spec, where: str):
    """An Optuna distribution from `{low, high[, log][, step]}` or `{choices: [...]}`; else a UserError."""
    import optuna.distributions as od

    where = f"{where}: '{key}'"
    form = "{low: L, high: H[, log: true][, step: S]} or {choices: [a, b, ...]}"
    if not isinstance(spec, dict) or not spec or not ({"choices"} == set(spec) or {"low", "high"} <= set(spec) <= {
            "low", "high", "log", "step"}):
        raise UserError(f"{where} must be {form}, got {spec!r}")
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise UserError(f"{where}: choices must be a non-empty list, got {choices!r}")
        texts = [c if c is None or isinstance(c, (bool, int, float, str)) else value_text(c) for c in choices]
        if len({repr(c) for c in texts}) < len(texts):
            raise UserError(f"{where}: choices name a value twice: {choices}")
        return od.CategoricalDistribution(texts)
    low, high = _number(spec, "low", where), _number(spec, "high", where)
    step = _number(spec, "step", where) if spec.get("step") is not None else None
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise UserError(f"{where}: log must be true or false, got {log!r}")
    whole = all(isinstance(v, int) for v in (low, high, step) if v is not None)
    try:
        if whole:
            return od.IntDistribution(low, high, log=log, step=step or 1)
        return od.FloatDistribution(low, high, log=log, step=step)
    except ValueError as e:
        raise UserError(f"{where}: {e}") from None


def read_space(path: str) -> dict:
    """The space file: a mapping of dotted config keys to distributions (shapes checked, keys not yet)."""
    where = f"space file {path}"
    try:
        tree = yaml.safe_load(read_utf8(path, "space file"))
    except yaml.YAMLError as e:
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{where} is not valid YAML: {problem}") from None
    if not isinstance(tree, dict) or not tree:
        raise UserError(f"{where} must map config keys to distributions, e.g. 'tfidf.C: {{low: 0.1, high: 10, "
                        "log: true}'")
    for key in tree:
        if not isinstance(key, str) or key == "exp" or key.startswith(RESERVED):
            raise UserError(f"{where}: '{key}' cannot be searched (every trial shares exp, data, folds and output "
                            "settings)")
    return {key: distribution(key, spec, where) for key, spec in tree.items()}


def _setting(cfg: Config, key: str):
    """The value of dotted `key` in `cfg`."""
    value = to_dict(cfg)
    for part in key.split("."):
        value = value[part]
    return value


def _check_key(p: Plan, key: str, dist) -> None:
    """Each end of a range (each choice) makes a config that loads and passes the run's checks, so a typo in a key or
    value stops the command before any training (the key's error is the config module's own)."""
    import optuna.distributions as od

    ends = dist.choices if isinstance(dist, od.CategoricalDistribution) else (dist.low, dist.high)
    for end in ends:
        cfg = p.trial_config([f"{key}={value_text(end)}"], p.base.exp)
        pipeline.check_config(cfg)
        if cfg.model_type == "transformer":
            from src.train import check_train_config

            check_train_config(cfg)
    if isinstance(dist, od.CategoricalDistribution):
        return
    now = _setting(p.base, key)
    if isinstance(now, bool) or not isinstance(now, (int, float)):
        raise UserError(f"'{key}' is not a number setting (now {now!r}): give it choices: [...] instead of a range")
    if isinstance(now, int) and isinstance(dist, od.FloatDistribution):
        raise UserError(f"'{key}' is a whole number: give low, high (and step) as integers")


def plan(config: str | None, overrides: list[str], folds: str | None, space_path: str, study: str | None) -> Plan:
    """The checked search: base config, space, every end of every range; nothing is written."""
    base = load_config(config, overrides)
    if folds is not None:
        base.folds.run = parse_folds(folds, base.folds.n_folds)
    folds_for_run(base)
    pipeline.check_config(base)
    space = read_space(space_path)
    given = {o.partition("=")[0].strip() for o in overrides}
    if both := sorted(given & set(space)):
        raise UserError(f"'{both[0]}' is both searched (space file {space_path}) and set by an override: drop one")
    p = Plan(config, overrides, folds, base, space)
    for key, dist in space.items():
        _check_key(p, key, dist)
    name = study or f"{base.exp}-tune"
    if not EXP_NAME.fullmatch(name):
        raise UserError(f"--study {name!r} must be a plain name (letters, digits, -_.+@,): it names a folder")
    p.stem = base.exp if name == f"{base.exp}-tune" else name
    check_exp(f"{p.stem}-t0")
    if len(folds_for_run(base)) == 1:
        print(f"note: one fold per trial: the objective is its in-sample OOF {p.metric} (decided on the rows it "
              "scores, optimistic); train 2+ folds (--folds 0-1) for the figure decided on the other folds")
    return p


def _hide_password(url: str) -> str:
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL at all: said by the error that follows
        return url


def open_study(p: Plan, storage: str | None, name: str, seed: int | None):
    """The study (created, or loaded to resume): TPE (seeded, offset by the trials already there so a resumed
    search does not propose the first trials again), the median pruner, heartbeats that retry a dead trial."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError

    if storage is None:
        storage = f"sqlite:///{(make_dir(Path(p.base.output.checkpoints_dir) / name) / 'study.db').absolute()}"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            rdb = optuna.storages.RDBStorage(storage, heartbeat_interval=HEARTBEAT_S, grace_period=GRACE_S,
                                             heartbeat_stale_trial_callback=retry())
            study = optuna.create_study(storage=rdb, study_name=name, direction=p.direction, load_if_exists=True,
                                        pruner=pruner())
        except (ImportError, ValueError, SQLAlchemyError) as e:
            reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise UserError(f"cannot open the study storage {_hide_password(storage)}: {reason}") from None
        study.sampler = optuna.samplers.TPESampler(seed=None if seed is None else seed + len(study.trials),
                                                   constant_liar=True)
    return study


def retry():
    """Optuna's callback that queues a failed trial again with the same values (MAX_RETRY times at most)."""
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRY)


def pruner():
    """Median pruning once 3 trials have finished, from a trial's first evaluation on."""
    import optuna

    return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0)


def _settings(p: Plan) -> dict:
    """The base config as flat dotted keys, less what may differ between machines or trials (paths, exp, space)."""
    def flat(tree: dict, prefix: str = "") -> dict:
        out = {}
        for k, v in tree.items():
            out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) and v else {prefix + k: v}
        return out

    return {k: v for k, v in flat(to_dict(p.base)).items() if k not in (*PATH_KEYS, "exp", *p.space)}


def check_study(study, p: Plan, name: str) -> None:
    """A new study records its metric and settings; a resumed one must have the same metric (its values are
    that metric's), other settings that differ are named; run folders `<stem>-t<n>` that are not this study's
    trials (another search's) stop the command before they are mixed up."""
    saved, now = study.user_attrs, _settings(p)
    if "metric" not in saved:
        study.set_user_attr("metric", p.metric)
        study.set_user_attr("settings", now)
    elif saved["metric"] != p.metric:
        raise UserError(f"study '{name}' searches for the best {saved['metric']}, not {p.metric}: set "
                        f"data.metric={saved['metric']}, or name a new study (--study NAME)")
    else:
        old = saved.get("settings", {})
        if differ := [k for k in sorted(set(old) | set(now)) if old.get(k) != now.get(k)]:
            shown = ", ".join(f"{k}: {old.get(k)!r} -> {now.get(k)!r}" for k in differ[:3])
            print(f"note: study '{name}' was started with other settings ({shown}{', ...' if len(differ) > 3 else ''}"
                  "); its trials are compared as one search")
    root, numbers = Path(p.base.output.checkpoints_dir), {t.number for t in study.get_trials(deepcopy=False)}
    pattern = re.compile(re.escape(p.stem) + r"-t(\d+)")
    strays = sorted(d for d in (root.iterdir() if root.is_dir() else ())
                    if (m := pattern.fullmatch(d.name)) and d.is_dir() and int(m[1]) not in numbers)
    if strays:
        raise UserError(f"{strays[0]} is not a trial of study '{name}' (another search's run?): move it away, or "
                        "name another study (--study NAME)")


def suggest(trial, key: str, dist):
    """The trial's value of `key` from its distribution."""
    import optuna.distributions as od

    if isinstance(dist, od.CategoricalDistribution):
        return trial.suggest_categorical(key, dist.choices)
    if isinstance(dist, od.IntDistribution):
        return trial.suggest_int(key, dist.low, dist.high, step=dist.step, log=dist.log)
    return trial.suggest_float(key, dist.low, dist.high, step=dist.step, log=dist.log)


class Pruning:
    """Training callback: reports the first trained fold's evaluation scores (in the study's direction) at their
    step and stops the run (`Stopped`) when the pruner says so; other folds' evaluations are not reported."""

    def __init__(self, trial, fold: int, sign: int):
        self.trial, self.fold, self.sign = trial, fold, sign

    def __call__(self, record: dict) -> None:
        if record["fold"] != self.fold:
            return
        self.trial.report(self.sign * record["score"], record["step"])
        if self.trial.should_prune():
            raise Stopped(f"pruned at fold {self.fold} step {record['step']}: {record.get('metric', 'score')} "
                          f"{abs(record['score']):.4f} below the median of earlier trials there")


class Objective:
    """One trial: its values sampled, its run `<stem>-t<n>` trained by `pipeline.run` (a retried trial resumes its
    original's run), its honest figure returned. A UserError fails the trial (its message kept in `error`)."""

    def __init__(self, study, p: Plan, prune: bool = True):
        self.study, self.p, self.prune, self.current = study, p, prune, None

    def origin(self, trial) -> int:
        """The trial's number, or the original's when Optuna queued it again after a failure."""
        import optuna

        self.current = trial.number
        frozen = next(t for t in self.study.get_trials(deepcopy=False) if t.number == trial.number)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            first = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(frozen)
        return trial.number if first is None else first

    def __call__(self, trial) -> float:
        exp = f"{self.p.stem}-t{self.origin(trial)}"
        trial.set_user_attr("exp", exp)
        sampled = [f"{k}={value_text(suggest(trial, k, d))}" for k, d in self.p.space.items()]
        trial.set_user_attr("overrides", sampled)
        trial.set_user_attr("command", self.p.command(sampled, exp))
        try:
            cfg = self.p.trial_config(sampled, exp)
            trial.set_user_attr("run", str(RunDir.of(cfg).out))
            result = self.run(trial, cfg)
        except Exception as e:  # a UserError (a diverged model) or a GPU out of memory: this trial failed
            if not isinstance(e, UserError) and type(e).__name__ != "OutOfMemoryError":
                raise
            trial.set_user_attr("error", str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__)
            raise e if isinstance(e, UserError) else UserError(f"out of memory: {trial.user_attrs['error']}") from None
        finally:
            gc.collect()
        cross = result.get("oof_crossfit")
        trial.set_user_attr("figure", "crossfit" if cross else "oof")
        if result.get("submission"):
            trial.set_user_attr("submission", result["submission"])
        return float((cross or result["oof"])[self.p.metric])

    def run(self, trial, cfg: Config) -> dict:
        """`pipeline.run`, with the pruning callback for transformer runs (the others have no evaluations)."""
        import optuna

        if cfg.model_type != "transformer" or not self.prune:
            return pipeline.run(cfg)
        sign = 1 if self.p.direction == "maximize" else -1
        try:
            return pipeline.run(cfg, callbacks=(Pruning(trial, folds_for_run(cfg)[0], sign),))
        except Stopped as e:
            raise optuna.TrialPruned(str(e)) from None


def _best(study):
    try:
        return study.best_trial
    except ValueError:  # no complete trial yet
        return None


def _params(trial) -> str:
    return " ".join(f"{k}={value_text(v)}" for k, v in trial.params.items())


class Progress:
    """One line per finished trial (this process's), and the last one seen."""

    def __init__(self, p: Plan, name: str, goal: int):
        self.p, self.name, self.goal, self.last, self.t0 = p, name, goal, None, time.time()

    def __call__(self, study, trial) -> None:
        from optuna.trial import TrialState

        self.last = trial
        state, m = trial.state, self.p.metric
        if state == TrialState.COMPLETE:
            what = f"{m} {trial.value:.4f}"
        elif state == TrialState.PRUNED:
            step = max(trial.intermediate_values, default=None)
            what = f"pruned at step {step}" + (f" ({m} {abs(trial.value):.4f})" if trial.value is not None else "")
        else:
            what = f"failed: {trial.user_attrs.get('error', 'see above')}"
        best = _best(study)
        done = len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))
        print(("\n" if state == TrialState.PRUNED else "")  # pruned inside training: after its progress bar
              + f"[{self.name}] trial {trial.number} ({trial.user_attrs.get('exp')}) {what}; {_params(trial)}; "
              + (f"best {best.value:.4f} (trial {best.number}); " if best else "")
              + f"{done}/{self.goal} finished, {time.time() - self.t0:.0f} s", flush=True)
        self.t0 = time.time()


def search(study, p: Plan, name: str, goal: int, prune: bool = True) -> None:
    """Trials until the study holds `goal` finished ones (other processes' too); FAILED_IN_A_ROW failures in a row
    stop it. Ctrl-C: the running trial is queued again (Optuna's retry), so the rerun resumes its run."""
    from optuna.trial import TrialState

    objective, progress, failed = Objective(study, p, prune), Progress(p, name, goal), 0
    while len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED))) < goal:
        try:
            study.optimize(objective, n_trials=1, catch=(UserError,), callbacks=[progress])
        except KeyboardInterrupt:
            stopped = [t for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,))
                       if t.number == objective.current]
            if stopped:
                retry()(study, stopped[0])
                print(f"[{name}] stopped: trial {stopped[0].number} ({stopped[0].user_attrs.get('exp')}) is queued "
                      "again and resumes when this command is rerun", flush=True)
            raise
        failed = failed + 1 if progress.last is not None and progress.last.state == TrialState.FAIL else 0
        if failed >= FAILED_IN_A_ROW:
            raise UserError(f"{failed} trials in a row failed, the last: {progress.last.user_attrs.get('error')}")


def summarize(study, p: Plan, name: str, storage: str) -> dict:
    """The trials table, the best trial's settings and run, `<checkpoints_dir>/<study>/best.yaml`."""
    trials = sorted(study.get_trials(deepcopy=False), key=lambda t: t.number)
    width = max([len(str(t.user_attrs.get("exp"))) for t in trials] + [3]) + 2
    print(f"\n[{name}] {len(trials)} trials, {p.direction} {p.metric} ({storage}):")
    print(f"  {'#':>4}  {'state':<9}{'exp':<{width}}{'value':>8}  settings")
    for t in trials:
        value = f"{t.value:.4f}" if t.value is not None else "-"
        print(f"  {t.number:>4}  {t.state.name:<9}{str(t.user_attrs.get('exp')):<{width}}{value:>8}  {_params(t)}")
    best = _best(study)
    if best is None:
        print(f"[{name}] no complete trial yet")
        return {"study": name, "storage": storage, "metric": p.metric, "trials": len(trials), "best": None}
    a = best.user_attrs
    figure = ("decided on the other folds" if a.get("figure") == "crossfit" else
              "in-sample OOF: one fold trained")
    info = {"study": name, "storage": storage, "metric": p.metric, "direction": p.direction, "trial": best.number,
            "value": best.value, "figure": figure, "exp": a.get("exp"), "settings": dict(best.params),
            "overrides": a.get("overrides"), "run": a.get("run"), "submission": a.get("submission"),
            "command": a.get("command")}
    path = Path(p.base.output.checkpoints_dir) / name / "best.yaml"
    write_text(path, yaml.safe_dump(info, sort_keys=False))
    print(f"[{name}] best: trial {best.number} ({a.get('exp')}), {p.metric} {best.value:.4f} ({figure})\n"
          f"  settings: {' '.join(a.get('overrides') or [])}\n  run: {a.get('run')}"
          + (f", submission {a['submission']}" if a.get("submission") else "")
          + f"\n  again: {a.get('command')}\n  saved: {path}")
    return {**info, "trials": len(trials), "best_yaml": str(path)}


@cli
def main(argv: list[str] | None = None) -> dict:
    p = ArgParser(prog="python -m src tune", description="Hyperparameter search (Optuna): each trial a run.")
    p.add_argument("--config", default=None, help="YAML config (default: the TF-IDF baseline's defaults)")
    p.add_argument("--space", required=True, help="YAML: dotted config keys -> {low, high[, log][, step]} | "
                                                  "{choices: [...]}")
    p.add_argument("--trials", type=int, required=True, help="finished trials the study ends with (earlier included)")
    p.add_argument("--folds", default=None, help="folds each trial trains, e.g. 0-2 (sets folds.run; default: all)")
    p.add_argument("--storage", default=None, help="Optuna RDB URL shared by several machines (default: SQLite "
                                                   "<checkpoints_dir>/<study>/study.db)")
    p.add_argument("--study", default=None, help="study name (default <exp>-tune); its trials' runs <study>-t<n>")
    p.add_argument("--seed", type=int, default=None, help="TPE seed (default 42; with --storage: random per machine)")
    p.add_argument("--no-prune", action="store_true", help="never prune transformer trials")
    p.add_argument("overrides", nargs="*", help="key=value config overrides for every trial")
    a = p.parse_intermixed_args(argv)
    if a.trials < 1:
        p.error(f"--trials must be >= 1, got {a.trials}")
    check_cli_overrides(a.overrides)
    try:
        import optuna
    except ImportError:
        raise UserError("the search needs Optuna: pip install 'optuna>=5.1'") from None
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one line per trial is printed here instead
    pl = plan(a.config, a.overrides, a.folds, a.space, a.study)
    name = a.study or f"{pl.base.exp}-tune"
    study = open_study(pl, a.storage, name, 42 if a.seed is None and a.storage is None else a.seed)
    storage = _hide_password(a.storage) if a.storage else str(Path(pl.base.output.checkpoints_dir) / name / "study.db")
    check_study(study, pl, name)
    print(f"[{name}] {pl.direction} {pl.metric} over {', '.join(pl.space)}: {a.trials} finished trials wanted, "
          f"{len(study.trials)} in the study ({storage})", flush=True)
    search(study, pl, name, a.trials, prune=not a.no_prune)
    return summarize(study, pl, name, storage)


if __name__ == "__main__":
    main()
