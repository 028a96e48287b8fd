"""Hours per arm of a GPU setup: the work that grows with the rollouts, and the fixed costs of every generation step,
optimizer update, evaluation and checkpoint, each from a published or measured figure named beside it.

The rollouts' work (generation, old log-probs, update) runs at END_TO_END's whole-step throughput. 2-GRPO generates
1/8 of 16-GRPO's rollouts over the same generation steps, so without fixed costs its hours would be exactly 1/8 of
16-GRPO's; the paper measured 0.24 on Qwen2.5-Math-1.5B (v2 Table 1). The fixed costs per generation step: vLLM
falls asleep and wakes up around the update, takes the new weights, and decodes for at least as many steps as the
longest response (a step cannot be faster than reading the weights once); per optimizer update the AdamW step; the
in-training evaluations and the checkpoints, the same for both arms. The bounds from bandwidths are lower bounds.
"""

from __future__ import annotations

from dataclasses import dataclass

from twogrpo.config import Params
from twogrpo.plan import GIB, ModelShape, contrastive_memory, model_shape, peak_memory, phase_memory, workload


@dataclass(frozen=True)
class Figure:
    value: float
    source: str


# Throughputs per GPU, at the model size they were measured at; another size scales them by parameters.
END_TO_END = Figure(1_581, "NeMo RL's published GRPO throughput (NVIDIA-NeMo/RL docs/about/performance-summary.md, "
                    "v0.5): Llama-3.1-8B, 16 H100 GPUs, bf16, on-policy with colocated generation, sequences up to "
                    "4,096 tokens, mean generated length 1,019; prompt + generated tokens per second per GPU, whole "
                    "steps")
END_TO_END_PARAMETERS = 8.03e9
UPDATE = Figure(27_191, "bench/gpu_step.py on one NVIDIA H100 80GB HBM3 (this project, docs/gpu.md): forward, "
                "backward and AdamW step of the Qwen2.5-Math-1.5B shape, bf16 autocast, 8 x 1,024 tokens")
UPDATE_PARAMETERS = 1.544e9
# Fixed costs.
SLEEP = Figure(1.6, "vLLM's sleep mode, level 1: 'It took 1.46-1.60 seconds to fall asleep' (vLLM's log in "
               "huggingface/trl issue 4086, September 2025)")
WAKE = Figure(0.4, "vLLM's sleep mode: a model wakes 'in ~0.1-0.4 s' (vLLM blog, 'Zero-Reload Model Switching with "
              "vLLM Sleep Mode', October 2025)")
HBM = Figure(3.35e12, "NVIDIA H100 SXM datasheet: 3.35 TB/s of GPU memory bandwidth")
NVLINK = Figure(450e9, "NVIDIA H100 SXM datasheet: NVLink 900 GB/s, 450 GB/s each way")
DISK = Figure(2e9, "assumed: 2 GB/s sequential writes, a data-center NVMe drive")
# Not stated by the paper; assumed for the hours (the rollouts' work scales linearly with them), overridable.
MEAN_PROMPT_TOKENS, MEAN_RESPONSE_TOKENS = 150, 600


def step_costs(params: Params, shape: ModelShape, gpus: int) -> dict[str, float]:
    """Seconds of the fixed costs of one generation step: vLLM's sleep and wake, the weight sync (the bf16 weights
    gathered over NVLink when sharded, copied at memory bandwidth otherwise), and the decode tail (the longest
    response's task.max_new_tokens decode steps, each at least one read of the bf16 weights)."""
    weights = 2 * shape.parameters
    _, sharded = params.runtime.launch_processes
    return {"sleep and wake": SLEEP.value + WAKE.value,
            "weight sync": weights / (NVLINK.value if sharded and gpus > 1 else HBM.value / 2),
            "decode tail": params.task.max_new_tokens * weights / HBM.value}


def arm_hours(params: Params, shape: ModelShape, gpus: int, prompt_tokens: float = MEAN_PROMPT_TOKENS,
              response_tokens: float = MEAN_RESPONSE_TOKENS) -> dict[str, dict[str, float]]:
    """Per arm: rollouts, hours (the rollouts' work plus the fixed costs), the fixed part, and the part the old
    log-probs and the update take at UPDATE's throughput (verl's full pass: every rollout through both)."""
    t, runtime = params.train, params.runtime
    _, sharded = runtime.launch_processes
    per_gpu = shape.parameters / (gpus if sharded else 1)
    whole = END_TO_END.value * END_TO_END_PARAMETERS / shape.parameters * gpus  # tokens per second
    update = UPDATE.value * UPDATE_PARAMETERS / shape.parameters * gpus
    steps = t.steps_per_epoch * t.epochs
    per_step = sum(step_costs(params, shape, gpus).values())
    # Evaluations: at step 0, every eval_every steps and at the last, then all the validation problems once (at most
    # eval_problems of them here); each reads its tokens at the whole-step throughput (an upper bound: that includes
    # training) and waits for its longest response.
    evaluations = steps // t.eval_every + 1 + (steps % t.eval_every != 0) + 1
    eval_tokens = t.eval_problems * t.eval_samples * (prompt_tokens + response_tokens)
    evaluation = eval_tokens / whole + params.evaluate.max_new_tokens * 2 * shape.parameters / HBM.value
    checkpoints = (steps - 1) // runtime.checkpoint_every if runtime.checkpoint_every else 0
    checkpoint = shape.parameters * (4 + 8) / DISK.value  # float32 weights and AdamW's two moments
    adamw = 7 * 4 * per_gpu / HBM.value  # reads weights, gradients, two moments; writes weights and moments
    out = {}
    for name, arm in t.arms.items():
        per_prompt = t.step_rollout_cap // t.generation_batch_prompts if arm.resample else arm.group_size
        rollouts = t.prompts_per_epoch * t.epochs * per_prompt  # 2-GRPO+RS: at most 16-GRPO's budget
        tokens = rollouts * (prompt_tokens + response_tokens)
        updates = steps * t.generation_batch_prompts // t.prompts_per_minibatch(arm)
        fixed = steps * per_step + updates * adamw + evaluations * evaluation + checkpoints * checkpoint
        # The old log-probs are a forward pass (2 of a step's 6 x parameters FLOPs per token); recomputing the
        # checkpointed layers adds another forward to the update (UPDATE was measured without it).
        work = (2 + (8 if runtime.gradient_checkpointing else 6)) / 6
        out[name] = {"rollouts": rollouts, "capped": arm.resample, "hours": (tokens / whole + fixed) / 3600,
                     "fixed_hours": fixed / 3600, "update_hours": tokens * work / update / 3600}
    return out


def hours_by_group_size(params: Params, gpus: int, prompt_tokens: float = MEAN_PROMPT_TOKENS,
                        response_tokens: float = MEAN_RESPONSE_TOKENS) -> dict[int, float]:
    """Planned hours of each arm without refills, by group size (2-GRPO's over 16-GRPO's: the time ratio)."""
    planned = arm_hours(params, model_shape(params), gpus, prompt_tokens, response_tokens)
    return {arm.group_size: planned[name]["hours"] for name, arm in params.train.arms.items() if not arm.resample}


def sources() -> list[str]:
    return [f"{name}: {figure.source}" for name, figure in (("whole steps", END_TO_END), ("update", UPDATE),
                                                              ("sleep", SLEEP), ("wake", WAKE), ("memory", HBM),
                                                              ("NVLink", NVLINK), ("checkpoint writes", DISK))]


def describe_plan(params: Params, gpus: int, gpu_memory_gib: float, prompt_tokens: float = MEAN_PROMPT_TOKENS,
                  response_tokens: float = MEAN_RESPONSE_TOKENS) -> str:
    """The plan as text: memory per GPU by phase and part, and hours per arm with their sources."""
    shape = model_shape(params)
    _, sharded = params.runtime.launch_processes
    work = workload(params, gpus, int(gpu_memory_gib * GIB), sharded)
    mode = "FSDP" if sharded else "DDP" if gpus > 1 else "one process"
    lines = [f"{params.base.model}: {shape.parameters / 1e9:.3f} B parameters, vocabulary {shape.vocab:,}, "
             f"{shape.positions:,} positions; {gpus} GPU(s) of {gpu_memory_gib:g} GiB, {mode}, "
             f"{params.train.precision}, micro-batches of {work.micro_batch_tokens:,} tokens"
             f"{', gradient checkpointing' if work.gradient_checkpointing else ''}",
             "memory per GPU, GiB:"]
    for phase, parts in phase_memory(shape, work).items():
        lines.append(f"  {phase:<12} {sum(parts.values()) / GIB:6.1f} = "
                     + ", ".join(f"{k} {v / GIB:.1f}" for k, v in parts.items() if v))
    peak = peak_memory(shape, work)
    verdict = "fits" if peak <= gpu_memory_gib * GIB else (
        "does NOT fit: more GPUs or FSDP (-S hardware=<name>), or lower train.micro_batch_tokens or "
        "rollout.vllm_memory_utilization")
    lines.append(f"  peak {peak / GIB:.1f} of {gpu_memory_gib:g} GiB: {verdict}")
    c = params.contrastive
    device, host = contrastive_memory(shape.parameters, c.shifts, c.responses, c.rows_per_pass, c.rollouts_per_pass)
    weights = 4 * shape.parameters  # the panel's model, in float32
    least = c.rows_per_pass == c.rollouts_per_pass == 1
    fits = "fits" if weights + device <= gpu_memory_gib * GIB else "does NOT fit" + (
        " one GPU, even at the least it holds (rows_per_pass and rollouts_per_pass 1)" if least else
        ": lower contrastive.rows_per_pass and rollouts_per_pass (1 and 1 hold the least)")
    lines.append(f"contrastive stage (Table 2 panel; contrastive.shifts={c.shifts}, rows_per_pass={c.rows_per_pass}, "
                 f"rollouts_per_pass={c.rollouts_per_pass}): model {weights / GIB:,.1f} GiB and gradient sums "
                 f"{device / GIB:,.1f} GiB per GPU besides a pass's activations, {fits}; "
                 f"host memory {host / GIB:,.1f} GiB")
    lines.append(f"hours per arm (prompts {prompt_tokens:g} and responses {response_tokens:g} tokens on average, "
                 f"assumed; --prompt-tokens, --response-tokens):")
    for name, h in arm_hours(params, shape, gpus, prompt_tokens, response_tokens).items():
        upto = "at most " if h["capped"] else ""  # 2-GRPO+RS: within 16-GRPO's budget
        lines.append(f"  {name}: {upto}{h['rollouts']:,} rollouts, {upto}{h['hours']:.2f} h, of which fixed costs "
                     f"{h['fixed_hours']:.2f} h, old log-probs and update {h['update_hours']:.2f} h")
    costs = ", ".join(f"{k} {v:.2f} s" for k, v in step_costs(params, shape, gpus).items())
    lines.append(f"  fixed costs per generation step: {costs}")
    lines.append(f"  whole steps at {END_TO_END.value:,} tokens/s per GPU for {END_TO_END_PARAMETERS / 1e9:.2f} B "
                 f"parameters, old log-probs and update at {UPDATE.value:,} for {UPDATE_PARAMETERS / 1e9:.3f} B, "
                 f"scaled by parameters")
    lines += [f"  source, {line}" for line in sources()]
    return "\n".join(lines)
