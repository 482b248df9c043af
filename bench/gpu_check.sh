#!/usr/bin/env bash
# One prepared run on a lent GPU machine (issue 32): every figure sdod needs from a GPU, in
# one command that fits one try of the lease (about 6 minutes on an H100/H200, 9 at most).
#
#   bash bench/gpu_check.sh [--out DIR] [--budget SECONDS]   # on the GPU machine
#   bash bench/gpu_check.sh --dry-run [--out DIR]            # every step on the CPU, tiny
#
# Steps, each timed and bounded by `timeout` (and by what is left of --budget):
#   1 env           versions, the GPU, nvidia-smi
#   2 pytest-gpu    `pytest -m gpu` (tests/gpu, test_train_step_gpu.py): bf16 vs fp32,
#                   channels-last, post-processing GPU = CPU, a GPU checkpoint loading on
#                   the CPU, no host sync in a training step, MXNet-exact sgd and adam on the GPU as on the CPU
#   3 throughput    bench/train_throughput.py: vgg-16 and resnet-50 SSD300 at batch 32 and
#                   64 in bf16, torchvision's ssd300_vgg16 in the same run
#   4 sample-data, pack, job, job-torchrun: a real job end to end (sample data packed to
#                   RecordIO, `sdod train` on vgg-16 with `ssd` augmentation, data workers on
#                   the cores, two epochs), then the same under torchrun --nproc-per-node 1:
#                   images/s from its throughput lines, GPU utilisation and memory sampled by
#                   nvidia-smi, the loss falling, the artifact loading (`sdod predict`)
# Results in DIR (default $OUT, else bench/results/gpu_check): log.txt, env.json,
# pytest_gpu.xml, throughput.json, job.json, job_torchrun.json, summary.json; the summary
# table is printed last. Exit 0 when every step succeeded (a missed target is reported in
# the table, not in the exit code).
#
# --dry-run: the CPU, tiny sizes (resnet-lite for the model-only and end-to-end steps),
# under 2 minutes; the packages the GPU machine lacks
# (boto3, botocore, s3fs, Airflow, Great Expectations, ...) are made unimportable
# (bench/gpu_machine/sitecustomize.py), so a module-level import of one fails here first.
# Python: $SDOD_PYTHON, else .venv/bin/python when present, else python3 (the GPU machine's).
set -u -o pipefail

ARGS="$*"
DRY=0
RESULTS=${OUT:-}
BUDGET=540
while [ $# -gt 0 ]; do
    case $1 in
        --dry-run) DRY=1 ;;
        --out) RESULTS=$2; shift ;;
        --budget) BUDGET=$2; shift ;;
        -h | --help) sed -n '2,27p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$REPO" || exit 1
RESULTS=${RESULTS:-$REPO/bench/results/gpu_check}
mkdir -p "$RESULTS" && RESULTS=$(cd "$RESULTS" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/sdod-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
if [ -z "${SDOD_PYTHON:-}" ]; then
    if [ -x .venv/bin/python ]; then SDOD_PYTHON=$REPO/.venv/bin/python; else SDOD_PYTHON=python3; fi
fi
PY=$SDOD_PYTHON
LOG=$RESULTS/log.txt
: >"$LOG"
export PY WORK RESULTS DRY REPO
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 SDOD_NO_DOWNLOAD=1
export SDOD_SLOT_DIR=$WORK/slots SDOD_SEED=0

if [ "$DRY" = 1 ]; then
    export CUDA_VISIBLE_DEVICES="" PYTHONPATH="$REPO/bench/gpu_machine:$PYTHONPATH"
    # sdod's light CPU network: the same path as vgg-16's (which pytest-gpu's and the unit
    # tests' CPU runs build), at a tenth of the CPU time
    NET=resnet-lite TRAIN=2 VAL=1 PARTS=2 BATCH=2 WORKERS=1
    THROUGHPUT_ARGS="--device cpu --nets $NET --sizes 300 --batches 2 --tv-batch 1 --iters 1 --warmup 0 --profile 1"
else
    NET=vgg-16 TRAIN=4096 VAL=256 PARTS=16 BATCH=32
    WORKERS=$(($(nproc) > 3 ? $(nproc) - 2 : 1)) # the cores, less the trainer's and nvidia-smi's
    THROUGHPUT_ARGS="--device cuda --sizes 300 --batches 32,64 --tv-batch 32 --profile 5"
fi
export NET TRAIN VAL PARTS BATCH SDOD_DATA_WORKERS=$WORKERS
DEADLINE=$((SECONDS + BUDGET))

now() { printf '%s' "${EPOCHREALTIME:-$(date +%s.%N)}"; }

step() { # step NAME LIMIT_S COMMAND...: run it bounded, log it, record rc and seconds
    local name=$1 limit=$2 left=$((DEADLINE - SECONDS)) start rc
    shift 2
    [ "$limit" -gt "$left" ] && limit=$left
    if [ "$limit" -lt 5 ]; then
        echo "== $name: skipped, the budget is spent" | tee -a "$LOG"
        printf '{"step": "%s", "rc": null, "seconds": 0, "limit_s": 0}\n' "$name" >>"$WORK/steps.jsonl"
        return
    fi
    echo "== $name (at most ${limit}s): $*" | tee -a "$LOG"
    start=$(now)
    timeout --kill-after=15 "$limit" "$@" >>"$LOG" 2>&1
    rc=$?
    local took
    took=$(awk -v a="$start" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')
    echo "== $name: exit $rc in ${took}s" | tee -a "$LOG"
    printf '{"step": "%s", "rc": %d, "seconds": %s, "limit_s": %d}\n' \
        "$name" "$rc" "$took" "$limit" >>"$WORK/steps.jsonl"
}

env_report() {
    "$PY" bench/_gpu_report.py env --out "$RESULTS/env.json" || return
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "(no nvidia-smi)"; fi
}

pytest_gpu() {
    local args=(-m gpu tests/gpu tests/unit/sdod/train/test_train_step_gpu.py)
    args+=(-p no:cacheprovider -q -rs --durations 10)
    if [ "$DRY" = 0 ]; then
        "$PY" -m pytest "${args[@]}" --junitxml "$RESULTS/pytest_gpu.xml"
        return
    fi
    # without CUDA: collected and skipped (pytest says 5, "nothing passed", by tests/conftest.py)
    "$PY" -m pytest "${args[@]}" --junitxml "$WORK/skipped.xml"
    [ $? -le 5 ] && "$PY" bench/_gpu_report.py all-skipped "$WORK/skipped.xml" || return 1
    # and the cheap ones run on the CPU, so that the tests' own code is exercised
    SDOD_GPU_TEST_DEVICE=cpu "$PY" -m pytest "${args[@]}" --noconftest \
        -k "resnet-lite-300 or postprocess or checkpoint or as_on_the_cpu" \
        --junitxml "$RESULTS/pytest_gpu.xml"
}

sample_data() { # PARTS generators in parallel (one is ~40 images/s), part 0 has the validation
    local i pids=() per=$(((TRAIN + PARTS - 1) / PARTS)) val
    for ((i = 0; i < PARTS; i++)); do
        val=1 && [ "$i" = 0 ] && val=$VAL
        "$PY" -m sdod make-sample-data --out "$WORK/data/p$i" --train "$per" --validation "$val" \
            --seed "$i" >"$WORK/data-p$i.log" 2>&1 &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i" || return 1; done
    tail -n 5 "$WORK/data-p0.log"
}

pack_data() {
    local i
    for ((i = 0; i < PARTS; i++)); do
        "$PY" -m sdod pack --images "$WORK/data/p$i/train" \
            --annotations "$WORK/data/p$i/train_annotation" --out "$WORK/packed/train/p$i" || return
    done
    "$PY" -m sdod pack --images "$WORK/data/p0/validation" \
        --annotations "$WORK/data/p0/validation_annotation" --out "$WORK/packed/validation/v"
}

stamp() { # prefix each line with the time it was read (for the GPU samples' windows)
    local line
    while IFS= read -r line; do printf '%s %s\n' "${EPOCHREALTIME:-0}" "$line"; done
}

run_job() { # run_job NAME inprocess|torchrun
    local name=$1 mode=$2 root=$WORK/$1 smi=$WORK/$1.smi.csv smi_pid="" rc images
    "$PY" bench/_gpu_report.py spec --name "gpu-check-${name//_/-}" --data "$WORK/packed" \
        --output "$WORK/output" --net "$NET" --batch "$BATCH" --samples "$(cat "$WORK/packed/count")" \
        >"$WORK/$name.spec.json" || return
    if command -v nvidia-smi >/dev/null && [ "$DRY" = 0 ]; then
        nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used \
            --format=csv,noheader,nounits -lms 250 >"$smi" 2>/dev/null &
        smi_pid=$!
    fi
    local train=(-m sdod train --job-spec "$WORK/$name.spec.json" --job-root "$root")
    if [ "$mode" = torchrun ]; then
        train=(-m torch.distributed.run --standalone --nproc-per-node 1 -m sdod train --job-root "$root")
    fi
    {
        if [ "$mode" = torchrun ]; then
            "$PY" -m sdod ingest --job-spec "$WORK/$name.spec.json" --job-root "$root" || exit
        fi
        echo "job: $PY ${train[*]}"
        "$PY" "${train[@]}"
    } 2>&1 | stamp | tee "$WORK/$name.log"
    rc=${PIPESTATUS[0]}
    [ -n "$smi_pid" ] && kill "$smi_pid" && wait "$smi_pid" 2>/dev/null
    images=$(find "$WORK/data/p0/validation" -name '*.jpg' | sort | head -n 1)
    "$PY" -m sdod predict --model "$root/model/model.tar.gz" "$images" >"$WORK/$name.predict.json"
    local predict_rc=$?
    cat "$WORK/$name.predict.json"
    "$PY" bench/_gpu_report.py job --name "$name" --log "$WORK/$name.log" --smi "$smi" \
        --rc "$rc" --predict-rc "$predict_rc" --out "$RESULTS/$name.json"
    [ "$rc" = 0 ] && [ "$predict_rc" = 0 ]
}

export -f now env_report pytest_gpu sample_data pack_data stamp run_job

echo "gpu_check: python $PY, results in $RESULTS, budget ${BUDGET}s$([ "$DRY" = 1 ] && echo ', dry run')" |
    tee -a "$LOG"
step env 60 bash -c env_report
step pytest-gpu 150 bash -c pytest_gpu
# shellcheck disable=SC2086  # THROUGHPUT_ARGS is a list of words
step throughput 180 "$PY" bench/train_throughput.py $THROUGHPUT_ARGS --out "$RESULTS/throughput.json"
step sample-data 120 bash -c sample_data
step pack 60 bash -c 'pack_data && find "$WORK/packed/train" -name "*.idx" -exec cat {} + | wc -l >"$WORK/packed/count"'
step job 150 bash -c 'run_job job inprocess'
step job-torchrun 150 bash -c 'run_job job_torchrun torchrun'
"$PY" bench/_gpu_report.py summary --steps "$WORK/steps.jsonl" --results "$RESULTS" \
    --dry-run "$DRY" --net "$NET" --batch "$BATCH" --command "bash bench/gpu_check.sh${ARGS:+ $ARGS}" | tee -a "$LOG"
