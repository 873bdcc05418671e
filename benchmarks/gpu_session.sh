#!/usr/bin/env bash
# Everything issue 9 wants measured on a GPU, as one device call (a session has 15 minutes of device
# time in all, one call at most 10). Prepare here with `bash benchmarks/gpu_bundle.sh`, then:
#   run(command="bash benchmarks/gpu_session.sh", carry=[".whl", ".data"], timeout_s=590)
# It installs the carried wheels and this grader into /tmp/site, unpacks CIFAR-10, runs
# benchmarks/gpu.py (wall time to verdict, images/s, GPU use, a batch with --per-gpu 4), then the
# sweep of benchmarks/sweeps/ten_epochs.toml, four trainings at a time, starting none after
# SWEEP_SECONDS. Tables, each run's training_log.json (packed) and the printed output land in $OUT.
# DRY_RUN=1 tries it all on a CPU in a few minutes (its own venv's packages, tiny data, one epoch).
set -uo pipefail
out=${OUT:-/tmp/gpu-session-out}
mkdir -p "$out"
exec > >(tee "$out/session.log") 2>&1
export NO_ALBUMENTATIONS_UPDATE=1 PYTHONUNBUFFERED=1
start=$SECONDS
dry=${DRY_RUN:-}
gpu_args=() sweep_args=(--jobs 4)
if [ -n "$dry" ]; then
  gpu_args=(--device cpu --limit 500 --epochs 1 --batch 2)
  sweep_args=(--jobs 2 --limit 200 --epochs 1 --only default wd_1.5e-3_seed1)
else  # the device's python lacks these
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
rm -rf /tmp/site/grader /tmp/sweep
python3 -m pip install -q --no-index --no-deps --no-build-isolation --no-compile --upgrade --target /tmp/site . || exit 1
export PYTHONPATH=/tmp/site
python3 -c "import grader, albumentations, torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'albumentations', albumentations.__version__)" || exit 1
[ -d /tmp/cifar10/test ] || python3 .data/unpack_cifar10.py /tmp/cifar10 || exit 1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$out/nvidia-smi.csv" 2>&1
echo "set-up: $((SECONDS - start)) s"
timeout 200 python3 benchmarks/gpu.py --data /tmp/cifar10 "${gpu_args[@]}" --json "$out/gpu.json" | tee "$out/gpu.md"
echo "gpu.py done at $((SECONDS - start)) s"
python3 benchmarks/sweep.py benchmarks/sweeps/ten_epochs.toml --data /tmp/cifar10 --out /tmp/sweep "${sweep_args[@]}" \
  --deadline "${SWEEP_SECONDS:-240}" | tee "$out/sweep.md"
tar czf "$out/sweep-logs.tgz" -C /tmp/sweep --exclude '*.safetensors' . 2>/dev/null
echo "done at $((SECONDS - start)) s"
