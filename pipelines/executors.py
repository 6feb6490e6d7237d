"""Which executor runs the code location's jobs, and the tags that say a step needs a GPU.

CLIPKT_EXECUTOR (read when the code location loads):
- unset or `multiprocess`: Dagster's default executor (a subprocess per step on this machine;
  `execute_in_process` stays in process). Nothing changes.
- `dask`: every step is a Dask task (dagster-dask's executor, `ClipktDaskExecutor`): on an
  existing scheduler at CLIPKT_DASK_ADDRESS (workers started by hand, by dask-jobqueue on SLURM,
  ...), else on a LocalCluster of CLIPKT_DASK_WORKERS worker processes (default 2) made for the
  run. Run config (`execution: config: cluster: {slurm: {...}}`, `{local: {...}}` or
  `{existing: {address: ...}}`, dagster-dask's schema) overrides that default; docs/distributed.md.

GPU steps carry GPU_OP_TAGS (`gpu_op_tags`): always `clipkt/gpu: "1"` (for people, the UI and
the multiprocess executor's tag_concurrency_limits), and, only when CLIPKT_DASK_GPU_RESOURCES=1,
dagster-dask's `dagster-dask/resource_requirements: {"GPU": 1}`, which makes Dask run the step
only on a worker started with `--resources GPU=<n>`. Opt-in, because Dask never schedules a task
whose resource no worker declares: on a LocalCluster or a CPU-only cluster the run would wait
forever instead of failing.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import os
from collections.abc import Mapping

import dagster as dg
from dagster import _check as check
from dagster._core.errors import raise_execution_interrupts
from dagster._core.events import DagsterEvent, DagsterEventType, EngineEventData
from dagster._core.execution.retries import RetryMode
from dagster._utils import iterate_with_context

EXECUTOR_ENV = "CLIPKT_EXECUTOR"  # multiprocess (default) | dask
DASK_ADDRESS_ENV = "CLIPKT_DASK_ADDRESS"  # tcp://host:8786 of an existing scheduler
DASK_WORKERS_ENV = "CLIPKT_DASK_WORKERS"  # LocalCluster worker processes when no address is given
DASK_GPU_RESOURCES_ENV = "CLIPKT_DASK_GPU_RESOURCES"  # 1: the cluster's GPU workers declare --resources GPU=n
DEFAULT_LOCAL_WORKERS = 2
EXECUTORS = ("multiprocess", "dask")

GPU_TAG = "clipkt/gpu"  # GPUs a step uses, as a string ("1")
DASK_GPU_RESOURCE = "GPU"  # the resource name GPU workers declare: `dask worker --resources GPU=1`
# dagster_dask.executor.DASK_RESOURCE_REQUIREMENTS_KEY (a test checks they agree); its value is a JSON
# object, resource -> amount. dagster-dask imports dask.distributed (~1 s), so only the Dask path imports it.
DASK_RESOURCE_REQUIREMENTS_KEY = "dagster-dask/resource_requirements"


def _flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def gpu_op_tags(gpus: int = 1, env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Op tags of a step that needs `gpus` GPUs: `clipkt/gpu`, plus dagster-dask's resource
    requirement when CLIPKT_DASK_GPU_RESOURCES says the Dask workers declare a GPU resource."""
    env = os.environ if env is None else env
    tags = {GPU_TAG: str(gpus)}
    if _flag(env.get(DASK_GPU_RESOURCES_ENV)):
        tags[DASK_RESOURCE_REQUIREMENTS_KEY] = json.dumps({DASK_GPU_RESOURCE: gpus})
    return tags


# What the CLIP embeddings, the neighbour tables and the audio encoder's training pass as op_tags.
GPU_OP_TAGS = gpu_op_tags()


# ----------------------------------------------------------------------------- the Dask executor


def default_dask_cluster(env: Mapping[str, str] | None = None) -> dict:
    """The Dask executor's `cluster` config when the run config gives none."""
    env = os.environ if env is None else env
    address = (env.get(DASK_ADDRESS_ENV) or "").strip()
    if address:
        return {"existing": {"address": address}}
    workers = int(env.get(DASK_WORKERS_ENV) or DEFAULT_LOCAL_WORKERS)
    if workers < 1:
        raise ValueError(f"{DASK_WORKERS_ENV}={workers}: need at least one worker")
    return {"local": {"n_workers": workers, "threads_per_worker": 1, "processes": True}}


# cluster type -> (module, class), the ones dagster-dask's executor knows
_CLUSTERS = {"local": ("dask.distributed", "LocalCluster"), "ssh": ("dask.distributed", "SSHCluster"),
             "yarn": ("dask_yarn", "YarnCluster"), "kube": ("dask_kubernetes", "KubeCluster"),
             "pbs": ("dask_jobqueue", "PBSCluster"), "moab": ("dask_jobqueue", "MoabCluster"),
             "sge": ("dask_jobqueue", "SGECluster"), "lsf": ("dask_jobqueue", "LSFCluster"),
             "slurm": ("dask_jobqueue", "SLURMCluster"), "oar": ("dask_jobqueue", "OARCluster")}
_NAMED = ("yarn", "pbs", "moab", "sge", "lsf", "slurm", "oar", "kube")  # dagster-dask names these after the job


class ClipktDaskExecutor(dg.Executor):
    """dagster-dask's DaskExecutor (0.29.27): one Dask task per step (its query_on_dask_worker), Dask
    resources from the step's `dagster-dask/resource_requirements` tag, one thread per LocalCluster
    worker (Dagster steps are not thread-safe), the same cluster config. Changed:

    - The step's Dagster arguments are bound into the task's function (functools.partial), not
      passed as task arguments: dask's task-spec parser walks tuple arguments, namedtuples
      included, and Dagster's records forbid iteration (a partitioned run's
      DagsterRun.partitions_subset: "Iteration is not allowed on `@record`"), so dagster-dask's
      own executor fails every partitioned run with distributed 2026.8.0.
    - A step is submitted when its upstream steps have succeeded, and never when one failed (the
      run then fails on that step, as under the multiprocess executor); dagster-dask submits all
      steps at once, chained by futures, so a step would run after its upstream step failed,
      on a missing or stale upstream file.
    - Task keys hold the run id (dagster-dask's are job.step): a backfill's runs of one job on a
      shared scheduler would otherwise be taken for the same task.
    - A cluster the executor starts is closed when the run ends (dagster-dask leaves it to the
      process's exit).
    """

    def __init__(self, cluster_type: str, cluster_configuration: Mapping | None):
        self.cluster_type = cluster_type
        self.cluster_configuration = dict(cluster_configuration or {})

    @property
    def retries(self) -> RetryMode:
        return RetryMode.DISABLED

    def cluster_kwargs(self, job_name: str) -> dict:
        """dagster-dask's DaskExecutor.build_dict: the cluster class's keyword arguments."""
        kwargs = {"name": job_name} if self.cluster_type in _NAMED else {}
        kwargs |= self.cluster_configuration
        if self.cluster_type == "local" and "address" not in kwargs:
            kwargs["threads_per_worker"] = 1
        return kwargs

    def start_cluster(self, job_name: str):
        """(what dask.distributed.Client connects to, whether this run started it and closes it)."""
        if self.cluster_type == "existing":
            return self.cluster_configuration["address"], False
        if self.cluster_type not in _CLUSTERS:
            raise ValueError(f"cluster must be one of existing, {', '.join(_CLUSTERS)}; got {self.cluster_type!r}")
        module, name = _CLUSTERS[self.cluster_type]
        return getattr(importlib.import_module(module), name)(**self.cluster_kwargs(job_name)), True

    def execute(self, plan_context, execution_plan):
        from dagster_dask.executor import get_dask_resource_requirements, query_on_dask_worker
        from dask.distributed import Client, as_completed

        check.invariant(plan_context.instance.is_persistent, "Dask execution requires a persistent DagsterInstance")
        instance_ref = plan_context.instance.get_ref()
        steps = [step for level in execution_plan.get_steps_to_execute_by_level() for step in level]
        upstream = {s.key: {k for i in s.step_inputs for k in i.dependency_keys} for s in steps}
        in_plan = set(upstream)
        step_of, succeeded, not_ok = {}, set(), set()  # not_ok: failed, or not run (an upstream step did not succeed)

        def submit_ready(client, running):
            for step in list(steps):  # in level order: a failure reaches every step below it in one pass
                deps = upstream[step.key] & in_plan
                if deps & not_ok:
                    steps.remove(step)
                    not_ok.add(step.key)
                    yield DagsterEvent.engine_event(
                        plan_context, f"{step.key} not run: upstream step(s) {sorted(deps & not_ok)} did not succeed",
                        EngineEventData())
                elif deps <= succeeded:
                    steps.remove(step)
                    # the Dagster arguments bound, not passed: dask's parser would iterate the records
                    task = functools.partial(
                        query_on_dask_worker, recon_job=plan_context.reconstructable_job,
                        dagster_run=plan_context.dagster_run, run_config=plan_context.run_config,
                        step_keys=[step.key], instance_ref=instance_ref, known_state=execution_plan.known_state)
                    key = f"{plan_context.job_name}.{plan_context.run_id}.{step.key}"  # runs share a scheduler
                    step_of[key] = step.key
                    running.add(client.submit(task, [], key=key, pure=False,
                                              resources=get_dask_resource_requirements(step.tags)))

        cluster, owned = self.start_cluster(plan_context.job_name)
        try:
            with Client(cluster) as client:
                # dask's sizeof walks each step's result, DagsterEvents holding records that forbid
                # iteration, and logs three warnings a step; harmless (a default size is used): quieted
                client.run(functools.partial(logging.Logger.setLevel, logging.getLogger("distributed.sizeof"),
                                             logging.ERROR))
                workers = len(client.scheduler_info().get("workers", {}))
                yield DagsterEvent.engine_event(
                    plan_context, f"Executing steps on Dask: {self.cluster_type} cluster, scheduler "
                                  f"{client.scheduler.address}, {workers} worker(s) now, "
                                  f"dashboard {client.dashboard_link}", EngineEventData())
                running = as_completed(with_results=True)
                yield from submit_ready(client, running)
                for future, events in iterate_with_context(raise_execution_interrupts, running):
                    for event in events:
                        yield check.inst(event, DagsterEvent)
                    ok = any(e.event_type == DagsterEventType.STEP_SUCCESS for e in events)
                    (succeeded if ok else not_ok).add(step_of[future.key])
                    yield from submit_ready(client, running)
        finally:
            if owned:
                cluster.close()


def clipkt_dask_executor(default_cluster: dict) -> dg.ExecutorDefinition:
    """An executor named `dask` with dagster-dask's config (`cluster`: existing, local, slurm, ...),
    `cluster` defaulting to `default_cluster`, running ClipktDaskExecutor. Worker processes of a
    cluster it starts are not daemonic: the cache stages run their own per-clip worker processes
    (assets.caches.worker_pool), and a daemonic process (distributed's default for a worker) may
    not start children. Workers started elsewhere (`dask worker`, dask-jobqueue) need
    DASK_DISTRIBUTED__WORKER__DAEMON=False in their environment for the same reason."""
    from dagster_dask import dask_executor

    selector = dask_executor.config_schema.as_field().config_type.fields["cluster"].config_type

    def create(init_context: dg.InitExecutorContext) -> ClipktDaskExecutor:
        import dask

        dask.config.set({"distributed.worker.daemon": False})  # read by the Nanny when it starts a worker
        ((cluster_type, cluster_config),) = init_context.executor_config["cluster"].items()
        return ClipktDaskExecutor(cluster_type, cluster_config)

    return dg.ExecutorDefinition(
        name="dask", executor_creation_fn=create, requirements=dg.multiple_process_executor_requirements(),
        config_schema={"cluster": dg.Field(selector, default_value=default_cluster, is_required=False,
                                           description="dagster-dask's cluster selector; default from "
                                                       f"{DASK_ADDRESS_ENV} / {DASK_WORKERS_ENV}")},
        description="Every step a Dask task (LocalCluster, an existing scheduler, SLURM via dask-jobqueue).")


def executor_from_env(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition | None:
    """The code location's executor: None (Dagster's default, multiprocess) unless CLIPKT_EXECUTOR=dask."""
    env = os.environ if env is None else env
    choice = (env.get(EXECUTOR_ENV) or "multiprocess").strip().lower()
    if choice not in EXECUTORS:
        raise ValueError(f"{EXECUTOR_ENV}={choice!r}: expected one of {', '.join(EXECUTORS)}")
    return clipkt_dask_executor(default_dask_cluster(env)) if choice == "dask" else None
