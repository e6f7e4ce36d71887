#!/usr/bin/env bash
# MindFormers' launcher for ChatGLM-6B runs on one server, with its usage:
#
#   bash scripts/run_distribute.sh RANK_TABLE_FILE CONFIG_PATH DEVICE_RANGE RUN_STATUS [GLM-TRAIN FLAGS...]
#   bash scripts/run_distribute.sh hccl_8p.json run_glm_6b_finetune.yaml "[0,8)" finetune --load_checkpoint glm_6b
#
# With a rank table (Ascend), one `glm-train --use_parallel` process per device of DEVICE_RANGE ([start,end),
# read as numbers: "[8,16)" is eight devices), each with DEVICE_ID, RANK_ID, RANK_SIZE and RANK_TABLE_FILE set
# and its log in output/log/rank_N/glm_train.log; checkpoints land in <output_dir>/checkpoint/rank_N. When a
# rank fails, the others are stopped and the script exits 1 naming the rank and its log.
# RANK_TABLE_FILE "none" (CPU or GPU, where MindSpore starts ranks with msrun instead of a rank table): the
# same run through `glm-train launch`, one process per device of the range.
set -u

usage() {
  echo "usage: bash $0 RANK_TABLE_FILE|none CONFIG_PATH DEVICE_RANGE RUN_STATUS [glm-train flags...]" >&2
  echo "  e.g. bash $0 hccl_8p.json run_glm_6b_finetune.yaml \"[0,8)\" finetune" >&2
  exit 2
}
[ $# -ge 4 ] || usage
rank_table=$1 config=$2 device_range=$3 run_status=$4
shift 4

if [[ ! $device_range =~ ^\[[[:space:]]*([0-9]+)[[:space:]]*,[[:space:]]*([0-9]+)[[:space:]]*\)$ ]]; then
  echo "$0: error: DEVICE_RANGE $device_range is not [start,end), e.g. \"[0,8)\"" >&2
  exit 2
fi
start=$((10#${BASH_REMATCH[1]})) end=$((10#${BASH_REMATCH[2]}))
if [ "$end" -le "$start" ]; then
  echo "$0: error: DEVICE_RANGE $device_range holds no device (end must exceed start)" >&2
  exit 2
fi
case $run_status in train|finetune|eval|predict) ;; *)
  echo "$0: error: RUN_STATUS $run_status is not one of train, finetune, eval, predict" >&2
  exit 2 ;;
esac
rank_size=$((end - start))

if [ "$rank_table" = "none" ]; then
  exec glm-train launch --nproc "$rank_size" -- --config "$config" --run_mode "$run_status" "$@"
fi
if [ ! -f "$rank_table" ]; then
  echo "$0: error: RANK_TABLE_FILE $rank_table does not exist (write one with glm-train hccl-table)" >&2
  exit 2
fi
rank_table=$(realpath "$rank_table")

declare -A rank_of_pid log_of_rank
stop_all() {
  for pid in "${!rank_of_pid[@]}"; do kill "$pid" 2>/dev/null; done
}
trap 'stop_all; exit 130' INT
trap 'stop_all; exit 143' TERM

for ((device = start; device < end; device++)); do
  rank=$((device - start))
  log_dir=output/log/rank_$rank
  mkdir -p "$log_dir"
  log_of_rank[$rank]=$log_dir/glm_train.log
  DEVICE_ID=$device RANK_ID=$rank RANK_SIZE=$rank_size RANK_TABLE_FILE=$rank_table \
    glm-train --config "$config" --run_mode "$run_status" --use_parallel --device_id "$device" --no-progress "$@" \
    > "${log_of_rank[$rank]}" 2>&1 &
  rank_of_pid[$!]=$rank
  echo "rank $rank on device $device: pid $!, log ${log_of_rank[$rank]}"
done

failed=0
while [ ${#rank_of_pid[@]} -gt 0 ]; do
  wait -n -p done_pid
  status=$?
  rank=${rank_of_pid[$done_pid]}
  unset "rank_of_pid[$done_pid]"
  if [ "$status" -ne 0 ] && [ "$failed" -eq 0 ]; then
    failed=1
    echo "$0: rank $rank failed (exit status $status); its log: ${log_of_rank[$rank]}" >&2
    tail -n 3 "${log_of_rank[$rank]}" >&2
    stop_all
  fi
done
exit $failed
