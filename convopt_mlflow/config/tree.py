"""The config tree: frozen dataclasses with field docstrings, validated on construction."""
from __future__ import annotations

from dataclasses import dataclass, field

from ..components.convergence_types import ACTIONS
from ..errors import ConfigError
from .validation import problems as find_problems

# the components own these names; the config only validates against them
INTERVENTIONS = ACTIONS


@dataclass(frozen=True)
class DataConfig:
    source: str = "eurusd-1h"
    """Bundled name (eurusd-1h, googl-1d), a CSV/Parquet path, or a ``synthetic:k=v,...`` spec."""
    val_fraction: float = 0.15
    """Share of bars in the validation split (chronological, after train)."""
    test_fraction: float = 0.15
    """Share of bars in the test split (after validation): A/B verdicts are decided on it."""
    holdout_fraction: float = 0.10
    """Share of bars in the holdout tail (the last bars, after the test split and an embargo):
    `convopt promote` evaluates on it and nothing else looks at it. 0 reserves none (the run is
    tagged convopt.splits.holdout=none and can only be promoted on reused test bars)."""
    embargo_bars: int = 24
    """Bars left out between consecutive splits so windows never straddle them."""
    vol_window: int = 20
    """Trailing window (bars) of the rolling-volatility features."""
    max_gap: str = "30D"
    """Largest gap allowed between consecutive bars (pandas Timedelta string); 'none' disables."""


@dataclass(frozen=True)
class EnvConfig:
    window: int = 32
    """Bars of history each observation covers (see ``observation``)."""
    observation: str = "multiscale"
    """multiscale: trailing means of each feature over 1, 2, 4, ... window bars (compact);
    window: the raw features of the last ``window`` bars, flattened."""
    reward_scale: float = 0.0
    """Multiplier of the rewards the agent learns from (its metrics stay in log returns);
    0 means auto: 1 / std of the train split's per-bar log returns."""
    episode_length: int = 256
    """Decisions per training episode (random window of the train split)."""
    cost_bps: float = 1.0
    """Transaction cost in basis points per unit of position change."""
    long_only: bool = False
    """Positions {flat, long} instead of {short, flat, long}."""
    n_envs: int = 8
    """Environments stepped together in one vectorized array operation."""
    regime_features: bool = False
    """Observe the trend / mean-reversion detector's probabilities (regime_trend, regime_mean_reversion,
    regime_neutral; components/trend_detector.py) as three more features, computed once, causally."""
    context_features: bool = False
    """Observe trailing statistics of what flips a signal's sign (data/context.py): the returns' lag-1
    autocorrelation and the vol ratio over 64 and 256 bars, each feat_* signal's recent IC and the signal
    signed by it; computed once, causally, and rebuilt identically by the pyfunc."""
    context_momentum: bool = False
    """With context_features: also observe the trailing drift's z-score, the sum of the last M log returns
    over their rms * sqrt(M), for M in 32, 64, 256 (ctx_momentum_M; data/context.py)."""
    context_ewm: bool = False
    """With context_features: also observe exponentially weighted drift z-scores, the last 256 log returns
    weighted 2^(-age/H) over their rms, for half-lives H in 4, 16, 64 bars (ctx_ewm_H; data/context.py)."""


@dataclass(frozen=True)
class PPOConfig:
    n_steps: int = 256
    """Steps per environment per rollout (rollout size = n_steps * n_envs)."""
    batch_size: int = 256
    """Minibatch size of each gradient step."""
    n_epochs: int = 10
    """Passes over each rollout."""
    gamma: float = 0.99
    gae_lambda: float = 0.95
    clip_range: float = 0.2
    ent_coef: float = 0.0
    """Entropy bonus coefficient (SB3 default 0.0); interventions may raise it."""
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    net_arch: tuple[int, ...] = (64, 64)
    """Hidden layer sizes of the policy and value networks."""
    activation: str = "tanh"
    """tanh or relu."""
    weight_decay: float = 0.0
    """Adam weight decay; the increase_regularization intervention may raise it."""
    torch_threads: int = 1
    """torch.set_num_threads; 1 is as fast as more on small MLPs."""


@dataclass(frozen=True)
class MonitorConfig:
    enabled: bool = False
    """Run the convergence monitor and apply its interventions."""
    interventions: tuple[str, ...] = ("lr_restart", "lr_reduce", "increase_entropy", "rollback", "reduce_batch_size")
    """Actions the monitor may take (see INTERVENTIONS)."""
    overfit_response: str = "increase_regularization"
    """increase_regularization or early_stop."""
    max_ent_coef: float = 0.05
    """Upper bound for the entropy coefficient raised by interventions."""
    max_weight_decay: float = 1e-3
    """Upper bound for weight decay raised by increase_regularization."""
    param_watch: bool = True
    """Track parameter norms, dead units and logit range every update."""
    shrink_perturb_fraction: float = 0.2
    """shrink_perturb moves every parameter this fraction of the way to a fresh initialization."""
    plasticity_patience: int = 5
    """Analysed updates in a row a plasticity signal (dead units, saturation, entropy collapse,
    stagnation) must persist before shrink_perturb / reset_head answer it."""
    plasticity_cooldown: int = 100_000
    """Environment steps shrink_perturb and reset_head each stay suppressed after firing."""
    plasticity_dead_fraction: float = 0.5
    """Share of hidden units dead or saturated at which shrink_perturb answers (dead units)."""
    plasticity_logit_range: float = 8.0
    """Policy logit range (nats) at which reset_head answers (saturated policy head; e^8 ~ 3000:1 odds)."""


@dataclass(frozen=True)
class RunConfig:
    total_timesteps: int = 100_000
    """Environment steps of the whole run."""
    seed: int = 0
    """Seeds torch, numpy and the environments."""
    experiment: str = ""
    """MLflow experiment name; empty uses MLflow's default resolution."""
    eval_freq: int = 25_000
    """Environment steps between validation evaluations (0 disables)."""
    checkpoint_freq: int = 50_000
    """Environment steps between checkpoints (0 disables)."""
    keep_checkpoints: int = 3
    """Number of most recent checkpoints kept (the best-by-eval one is kept too)."""
    max_rollbacks: int = 3
    """Rollbacks allowed before the run stops FAILED."""
    progress_bar: bool = True
    """Show a console progress bar."""
    final_model: str = "best"
    """Weights the run ships: best (the best-by-validation checkpoint, when it beats the last
    weights on validation) or last (whatever the last update left)."""
    async_logging: bool = False
    """Send each rollout's MLflow batch from a writer thread. Worth it against a remote tracking
    server; on local sqlite the writer competes with training for the GIL and measured slower."""


@dataclass(frozen=True)
class EnsembleConfig:
    """Ensemble training (used when ``ensemble_size`` > 1); see components/ensemble.py."""

    workers: int = 0
    """Members trained at once, each in its own process with one torch thread; 0 = os.cpu_count()."""
    min_members: int = 2
    """Members that must finish for the ensemble to be built; fewer ends the ensemble run FAILED."""
    registry_name: str = "convopt-ensemble"
    """Registered model that receives a new version per ensemble with a validation edge."""
    register: bool = True
    """Register the ensemble model (never when its validation Sharpe is <= 0)."""
    lr_factor: tuple[float, ...] = (0.5, 2.0)
    """Bounds of each member's learning-rate multiplier (log-uniform); equal bounds: no jitter."""
    ent_coef: tuple[float, ...] = (0.0, 0.01)
    """Bounds of each member's entropy coefficient (uniform)."""
    clip_range: tuple[float, ...] = (0.1, 0.3)
    """Bounds of each member's PPO clip range (uniform)."""
    net_archs: tuple[str, ...] = ()
    """Member network variations, e.g. 64x64+128x128 (member i takes item i mod n); empty keeps ppo.net_arch.
    The logged model holds one network spec, so members with other shapes cannot be packed into it."""
    activations: tuple[str, ...] = ()
    """Member activation variations (tanh, relu), cycled like net_archs; empty keeps ppo.activation."""
    data_subsets: str = "bootstrap"
    """none, bootstrap (blocks of the train split drawn with replacement) or disjoint (contiguous shares)."""
    n_blocks: int = 10
    """Contiguous blocks the train split's episode starts are cut into for data_subsets."""
    train_blocks: tuple[int, ...] = ()
    """Set per member by the ensemble: the train blocks this run's episodes start in; empty = all."""


@dataclass(frozen=True)
class CurriculumConfig:
    """How the curriculum moves between stages (used when ``curriculum_enabled``); see components/curriculum.py."""

    triggers: tuple[str, ...] = ("steps", "performance", "monitor")
    """What advances a stage: steps (25/50/75/90% of the run), performance (validation score
    >= stage_progression_threshold), monitor (its advance_curriculum intervention)."""
    min_stage_fraction: float = 0.05
    """Share of the run a stage lasts at least before performance or the monitor can end it."""
    collapse_margin: float = 1.0
    """Step back a stage when the validation score falls this far below the score the stage was entered with."""
    max_step_backs: int = 2
    """Step-backs allowed in a run (0: never step back)."""
    final_share: float = 0.5
    """Share of the run, at its end, whose episodes start anywhere in the train split whatever the stage
    (the stages' step schedule is compressed into the rest); in [0, 1), 0 = the design's curriculum."""


@dataclass(frozen=True)
class AugmentConfig:
    """Details of market augmentation (the reference probabilities are top-level fields); see
    components/augmentation.py."""

    synthetic_prob: float = 0.0
    """Probability that an episode plays a block-bootstrapped scenario of train-split bars."""
    noise_level: float = 0.5
    """Injected return noise as a multiple of the local volatility."""
    warp_factor: float = 0.3
    """Time warp: largest relative change of the local speed of time, in [0, 1)."""
    dropout_rate: float = 0.25
    """Share of the base features masked in a feature-dropout episode."""
    block_length: float = 24.0
    """Mean block length (bars) of the stationary bootstrap."""


@dataclass(frozen=True)
class CounterfactualConfig:
    """Counterfactual PPO: learn from the reward of every action at every visited bar (see
    training/counterfactual.py). The market is exogenous, so those rewards are exact."""

    enabled: bool = False
    """Use all-action advantages in the policy loss (off: plain PPO, none of its code runs)."""
    critic_positions: bool = True
    """The critic also learns, at every visited bar, the value of holding each position not held there
    (one-step expected target under the rollout policy)."""
    baseline: str = "critic"
    """What the all-action advantages subtract: critic (V(s)) or policy_mean (sum_a pi_k(a|s) Q(s,a),
    so they average to 0 under the rollout policy whatever the critic's error at s)."""


@dataclass(frozen=True)
class DirectConfig:
    """The direct learner (Moody & Saffell's direct reinforcement; see training/direct.py): gradient
    ascent on the exact expected net PnL of sampled train windows, the position distribution carried
    forward through the position recursion, so no action is sampled and no critic is learnt."""

    enabled: bool = False
    """Train with the direct learner instead of PPO (off: none of its code runs)."""
    window: int = 64
    """Decision bars per sampled train window (at most env.episode_length); each window starts flat."""
    passes: int = 10
    """Gradient steps over each batch of windows (like PPO's epochs); samples are counted once per draw."""
    batch_windows: int = 16
    """Windows drawn per batch: each batch advances the step count by window * batch_windows bars."""
    lr: float = 1e-3
    """Adam learning rate of the direct learner (see lr_schedule; base_learning_rate is PPO's)."""
    lr_schedule: str = "constant"
    """constant: lr throughout; linear: lr times the fraction of run.total_timesteps still to go (0 at the end)."""
    objective: str = "pnl"
    """pnl: the expected net reward per bar; sharpe: per window, the expected mean reward per bar over
    the square root of its expected second moment minus the squared mean (a risk-adjusted variant);
    batch_sharpe: the same ratio over all the batch's bars pooled (the Sharpe of the batch as a whole)."""


@dataclass(frozen=True)
class RecurrentConfig:
    """A recurrent (LSTM) policy through sb3-contrib's RecurrentPPO (see training/recurrent.py): memory
    of bars older than the observation window. Its state is carried through backtests and through one
    pyfunc call's rows (consecutive bars, fresh state per call)."""

    enabled: bool = False
    """Train an MlpLstmPolicy with RecurrentPPO (off: the memoryless MlpPolicy, none of its code runs)."""
    lstm_hidden_size: int = 64
    """Units of the actor's LSTM (the critic has its own of the same size), in front of ppo.net_arch."""
    n_lstm_layers: int = 1
    """Stacked LSTM layers."""


@dataclass(frozen=True)
class OptimizedTrainingConfig:
    # --- reference design fields (names and meaning kept) ---
    base_learning_rate: float = 3e-5
    """Base LR of the scheduler (the reference design's value)."""
    min_learning_rate: float = 1e-7
    max_learning_rate: float = 1e-4
    lr_schedule_type: str = "cosine_with_restarts"
    """One of constant, linear, cosine, cosine_with_restarts, plateau, multi_phase."""
    restart_period: int = 500_000
    """First SGDR cycle length in environment steps."""
    curriculum_enabled: bool = False
    """Curriculum learning: episodes start in easy windows first (see ``curriculum.*``)."""
    curriculum_stages: int = 5
    """Curriculum stages: 5 are the design's named stages; another count caps difficulty at 1/n, 2/n, ..."""
    stage_progression_threshold: float = 0.1
    """Validation score (Sharpe) at which a curriculum stage counts as mastered and the next begins."""
    replay_buffer_size: int = 1_000_000
    """Transition replay capacity in transitions (18 bytes each plus a 32-byte-per-slot sum-tree)."""
    replay_ratio: float = 0.0
    """With replay_enabled: transition mode, the share of each update's samples replayed from the
    buffer (at most 0.9); scenario mode, the share of episode starts drawn by priority. 0 is baseline PPO."""
    priority_alpha: float = 0.6
    """Prioritization exponent of replay (0: uniform, 1: proportional to the priority)."""
    plateau_threshold: float = 0.1
    """Coefficient of variation of the loss over the window below which it is a plateau."""
    intervention_threshold: float = 0.3
    """Severity in [0, 1] above which non-emergency interventions fire."""
    monitoring_window: int = 20
    """PPO updates in the monitor's trend window (the reference gave no unit)."""
    noise_injection_prob: float = 0.0
    """Augmentation: share of episodes whose returns get volatility-scaled noise (see ``augment.*``)."""
    time_warp_prob: float = 0.0
    """Augmentation: share of episodes played on a time-warped copy of their window."""
    feature_dropout_prob: float = 0.0
    """Augmentation: share of episodes with some observed features masked."""
    ensemble_size: int = 1
    """Policies trained together: above 1, the run is an ensemble run with one child run per member."""
    diversity_penalty: float = 0.1
    """Ensemble diversity penalty: how much the ``weighted`` combination discounts a member whose
    validation returns correlate with the others'."""
    meta_learning_rate: float = 1e-4
    """Floor of the meta controller's bandit step size: sample means until 1/meta_learning_rate rewards,
    then an exponential recency-weighted mean (forgets what helped earlier in training)."""
    adaptation_frequency: int = 10_000
    """Env steps between meta-controller adaptations. Each choice is rewarded with the change of the
    newest validation score (run.eval_freq must be > 0); with run.eval_freq above it, some adaptations
    see no new score and go unrewarded."""
    # --- extensions ---
    scheduler_enabled: bool = False
    """Install the AdvancedLRScheduler; off means a constant LR of base_learning_rate."""
    period_mult: float = 1.0
    """SGDR cycle-length multiplier after each restart."""
    warmup_steps: int = 0
    """Warm-up steps of the multi_phase schedule."""
    replay_enabled: bool = False
    """Prioritized replay (see training/replay.py); off means no replay code runs at all."""
    replay_mode: str = "scenario"
    """scenario: prioritized episode-start windows (exactly on-policy); transition: replayed transitions
    with behaviour log-probs, truncated importance ratios and a GePPO clip centred on the behaviour policy."""
    priority_strategy: str = "learning_difficulty"
    """What makes a bar worth replaying: pnl_impact, rare_events, learning_difficulty (|TD error| only)
    or regime_transitions; it multiplies the |TD error| refreshed after every update."""
    replay_beta0: float = 0.4
    """Transition replay: initial importance-sampling exponent, annealed linearly to 1 over the run."""
    meta_enabled: bool = False
    """Run the meta-learning controller: regime detection on the train split and per-regime bandits
    choosing LR / ent_coef / clip-range multipliers every adaptation_frequency env steps."""
    meta_stratified: bool = False
    """Meta controller with regime-stratified rollouts: each block of adaptation_frequency env steps trains
    on one regime's episode windows (trend, mean_reversion, neutral, high_vol; trend detector + BOCPD) with
    that regime's bandit's multipliers, rewarded by the change of that regime's validation Sharpe. False:
    the regime around the envs' current bars picks the bandit (almost always one regime)."""
    data: DataConfig = field(default_factory=DataConfig)
    env: EnvConfig = field(default_factory=EnvConfig)
    ppo: PPOConfig = field(default_factory=PPOConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    run: RunConfig = field(default_factory=RunConfig)
    ensemble: EnsembleConfig = field(default_factory=EnsembleConfig)
    curriculum: CurriculumConfig = field(default_factory=CurriculumConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    counterfactual: CounterfactualConfig = field(default_factory=CounterfactualConfig)
    direct: DirectConfig = field(default_factory=DirectConfig)
    recurrent: RecurrentConfig = field(default_factory=RecurrentConfig)

    def __post_init__(self) -> None:
        problems = list(find_problems(self))
        if problems:
            raise ConfigError("invalid configuration:\n" + "\n".join(f"  - {p}" for p in problems))
