"""Settings: flags, then `OPENFT_*` environment variables, then defaults; and `DataLayout`, where
each thing lives in the data folder.

Each entry point builds one `Settings()` and passes it down explicitly (no process-wide
global); tests pass their own. Nothing here touches the disk except
`Settings.ensure_dirs()`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


@dataclass(frozen=True)
class DataLayout:
    """The data folder's layout, decided once: every path openft keeps under `root` (OPENFT_DATA_DIR).
    Pure paths; nothing is created here (`Settings.ensure_dirs`)."""

    root: Path

    @property
    def blobs(self) -> Path:
        """Uploaded files' content, content-addressed (openft.store.blobs)."""
        return self.root / "blobs"

    @property
    def jobs(self) -> Path:
        """One folder per fine-tuning job: spec, logs, checkpoints, results.csv, the final model."""
        return self.root / "jobs"

    def job_dir(self, job_id: str) -> Path:
        return self.jobs / job_id

    @property
    def exports(self) -> Path:
        """One folder per model export (GGUF, merged weights)."""
        return self.root / "exports"

    @property
    def tmp(self) -> Path:
        """Scratch space (the data tools' uploaded tables under tmp/data-tools)."""
        return self.root / "tmp"

    @property
    def models(self) -> Path:
        """Converted base models, unless OPENFT_MODEL_CACHE_DIR puts them elsewhere."""
        return self.root / "models"

    @property
    def models_file(self) -> Path:
        """The registered base models (openft.models.registry)."""
        return self.root / "models.json"

    @property
    def database(self) -> Path:
        """The SQLite database, unless OPENFT_DATABASE_URL names another."""
        return self.root / "openft.db"

    @property
    def admin_key(self) -> Path:
        """The admin API key generated at first start (mode 0600)."""
        return self.root / "admin_key"

    @property
    def key_secret(self) -> Path:
        """The secret API keys are hashed with, generated at first start unless OPENFT_KEY_SECRET is set."""
        return self.root / "key_secret"

    def owned(self) -> tuple[Path, ...]:
        """What openft writes directly under the root (the folder may hold the operator's files too);
        the database's files (openft.db*) and temporary key files (.admin_key.*) aside."""
        return (self.blobs, self.jobs, self.exports, self.tmp, self.models, self.admin_key, self.key_secret,
                self.models_file)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="OPENFT_", extra="ignore")

    data_dir: Path = Field(Path("./openft-data"), description="Where blobs, jobs and the SQLite file live.")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite inside data_dir.")
    api_key: str | None = Field(None, description="Admin key; generated and printed at first start when unset.")
    max_upload_bytes: int = Field(512 * 1024 * 1024, description="Largest accepted upload, in bytes.")
    organization: str = Field("openft", description="Organization name used in ft: model ids.")
    host: str = Field("127.0.0.1", description="Address `openft serve` binds.")
    port: int = Field(8000, description="Port `openft serve` binds.")
    eval_python_grader: bool = Field(False, description="Allow the Evals API's python grader (runs user code).")
    embedded_worker: bool = Field(True, description="Run a job worker inside `openft serve`.")
    worker_poll_seconds: float = Field(1.0, description="How often an idle worker looks for queued jobs.")
    heartbeat_seconds: float = Field(5.0, description="How often a worker refreshes its lease on a running job.")
    lease_seconds: float = Field(60.0, description="A running job whose heartbeat is older is requeued.")
    model_cache_dir: Path | None = Field(None, description="Converted base models; default: data_dir/models.")
    device: str = Field("auto", description="'auto', 'cpu' or 'cuda'.")
    serve_max_batch: int = Field(16, description="Sequences decoded together by the engine.")
    serve_max_queue: int = Field(64, description="Requests waiting beyond the running batch before 429.")
    serve_max_adapters: int = Field(8, description="LoRA adapters kept loaded (LRU).")
    serve_max_adapter_bytes: int = Field(2 * 1024**3, description="Memory bound for loaded adapters, bytes.")
    preload_models: str = Field("smollm2-135m-instruct", description=(
        "Models loaded in the background when the server starts, comma-separated (empty: none)."))
    serve_load_wait_s: float = Field(0.0, ge=0, description=(
        "How long a request for a model still loading waits (asynchronously) before 503 + Retry-After."))
    serve_backend: str = Field("builtin", description="'builtin' (transformers + our multi-LoRA batching) or 'vllm'.")
    serve_dtype: str = Field("auto", description="'auto' (bf16 where the CPU/GPU has it), 'float32' or 'bfloat16'.")
    serve_threads: int = Field(0, description="Torch threads for decoding; 0 adapts to the machine's load.")
    train_threads: str = Field("auto", pattern=r"^(auto|default|[1-9][0-9]{0,3})$",
                               description="Torch threads of a training run on CPU: 'auto' (the cores other "
                               "processes leave idle, re-checked between steps), 'default' (torch's own: one per "
                               "core) or a number; a job's num_threads hyperparameter comes first.")
    serve_cuda_graphs: bool = Field(True, description="On CUDA, capture the fixed-shape decode step in CUDA graphs.")
    serve_max_prompts: int = Field(256, ge=1, description="Most prompts in one legacy completions request.")
    serve_max_stop_chars: int = Field(1000, ge=1, description="Longest stop sequence, in characters.")
    job_backend: str = Field("local", description="Where jobs' training runs: 'local' (a child process of the "
                             "worker; see openft.jobs.backends).")
    runner_max_retries: int = Field(2, ge=0, description="Times a job whose training process died of an "
                                    "infrastructure fault (killed, not out of memory) is retried from its last "
                                    "checkpoint before it fails.")
    allow_hub_models: bool = Field(False, description="Let `org/name` model ids download from (or load out of the "
                                                      "cache of) the Hugging Face hub; off: only registered models.")
    model_aliases: str | None = Field(None, description="Model names mapped onto this server's models: a JSON "
                                      "object such as {\"gpt-4o-mini*\": \"smollm2-135m-instruct\"} (fnmatch "
                                      "patterns allowed) or the path of a JSON/TOML file in `openft migrate "
                                      "--map-file`'s format.")
    key_secret: str | None = Field(None, description="Secret that API keys are hashed with (HMAC-SHA256); default: "
                                                     "one generated at first start in data_dir/key_secret.")
    webhooks_allow_private: bool = Field(False, description="Let webhook endpoints point at private, loopback, "
                                         "link-local or otherwise non-public addresses (off: refused at "
                                         "registration and, after DNS resolution, at every delivery).")
    webhooks_max_attempts: int = Field(8, ge=1, description="Attempts to deliver one webhook event before it is "
                                       "marked failed.")
    webhooks_retry_seconds: float = Field(10.0, gt=0, description="Wait before the first retry of a webhook "
                                          "delivery; doubled after every further failed attempt.")
    webhooks_retry_max_seconds: float = Field(3600.0, gt=0, description="Longest wait between two attempts.")
    webhooks_timeout_seconds: float = Field(10.0, gt=0, description="Connect and read timeout of one attempt.")
    # Bounds on what one /v1/openft/data/inspect or convert may use (it runs in a child process).
    data_tools_max_rows: int = Field(1_000_000, gt=0, description="Most rows a table read by the data tools may have.")
    data_tools_max_expanded_bytes: int = Field(
        256 * 1024**2, gt=0, description="Most bytes an uploaded table may inflate to before it is read (XLSX zip "
                                         "members, Parquet uncompressed row groups), checked before reading.")
    data_tools_max_memory_bytes: int = Field(2 * 1024**3, gt=0, description="Address-space limit (RLIMIT_AS) of "
                                                                           "the child process that reads the table.")
    data_tools_timeout_seconds: float = Field(300.0, gt=0, description="A data-tools child still working after "
                                                                     "this long is killed.")
    # Upper bounds on what a job's hyperparameters may ask for (the API refuses more at creation).
    limit_n_epochs: int = Field(50, description="Most epochs a job may ask for.")
    limit_batch_size: int = Field(256, description="Largest batch_size a job may ask for.")
    limit_lora_r: int = Field(256, description="Largest LoRA rank.")
    limit_lora_alpha: float = Field(4096.0, description="Largest LoRA alpha.")
    limit_max_seq_len: int = Field(32768, description="Largest max_seq_len, in tokens.")
    limit_pack_tokens: int = Field(131072, description="Largest pack_tokens (tokens in one packed row).")
    limit_num_threads: int = Field(0, description="Most CPU threads a job may ask for; 0: this machine's cores.")
    limit_checkpoint_every_steps: int = Field(1_000_000, description="Largest checkpoint_every_steps.")
    limit_keep_checkpoints: int = Field(20, description="Most checkpoints a job may keep on disk.")
    limit_eval_every_steps: int = Field(1_000_000, description="Largest eval_every_steps.")
    limit_weight_decay: float = Field(10.0, description="Largest weight_decay.")
    limit_max_grad_norm: float = Field(1e6, description="Largest max_grad_norm.")

    @property
    def layout(self) -> DataLayout:
        """Where each thing lives in `data_dir`."""
        return DataLayout(Path(self.data_dir))

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.layout.database.resolve()}"

    def resolved_model_cache_dir(self) -> Path:
        return (self.model_cache_dir or self.layout.models).resolve()

    def preload_model_ids(self) -> list[str]:
        """OPENFT_PRELOAD_MODELS as a list of model ids."""
        return [m.strip() for m in self.preload_models.split(",") if m.strip()]

    def ensure_dirs(self) -> None:
        layout = self.layout
        for folder in (layout.root, layout.blobs, layout.jobs, layout.tmp):
            folder.mkdir(parents=True, exist_ok=True)
        self.resolved_model_cache_dir().mkdir(parents=True, exist_ok=True)
