#!/bin/sh
# Stand-in for TFLite's benchmark_model on the emulated phone (tests only): parses the tool's flags and
# prints its log in the tool's own format (benchmark_model.cc / benchmark_tflite_model.cc /
# stats_calculator), with --num_runs and --warmup_runs honoured and statistics computed the way
# tsl::Stat / StatWithPercentiles compute them. It also appends its argv and CPU affinity to
# $TMPDIR/standin_trace.txt (adb shell sets TMPDIR=/data/local/tmp) so tests can see what the device really ran.
graph=""; runs=50; warm=1; threads=-1; gpu=0; nnapi=0; xnn=1; prof=0; min_secs=1; max_secs=150; wsecs=0.5
for a in "$@"; do
  case "$a" in
    --graph=*) graph="${a#*=}" ;;
    --num_runs=*) runs="${a#*=}" ;;
    --warmup_runs=*) warm="${a#*=}" ;;
    --num_threads=*) threads="${a#*=}" ;;
    --min_secs=*) min_secs="${a#*=}" ;;
    --max_secs=*) max_secs="${a#*=}" ;;
    --warmup_min_secs=*) wsecs="${a#*=}" ;;
    --use_gpu=true) gpu=1 ;;
    --use_nnapi=true) nnapi=1 ;;
    --use_xnnpack=false) xnn=0 ;;
    --use_xnnpack=true) xnn=1 ;;
    --enable_op_profiling=true) prof=1 ;;
    --*) ;;
    *) echo "ERROR: Unconsumed cmdline flags: $a"; exit 1 ;;
  esac
done
trace="${TMPDIR:-/data/local/tmp}/standin_trace.txt"
{ echo "argv: $*"; grep Cpus_allowed_list /proc/self/status; } >> "$trace" 2>/dev/null
echo "INFO: STARTING!"
echo "INFO: Log parameter values verbosely: [0]"
echo "INFO: Min num runs: [$runs]"
echo "INFO: Min runs duration (seconds): [$min_secs]"
echo "INFO: Max runs duration (seconds): [$max_secs]"
[ "$threads" != -1 ] && echo "INFO: Num threads: [$threads]"
echo "INFO: Min warmup runs: [$warm]"
echo "INFO: Min warmup runs duration (seconds): [$wsecs]"
echo "INFO: Graph: [$graph]"
[ "$prof" = 1 ] && echo "INFO: Enable op profiling: [1]"
[ "$gpu" = 1 ] && echo "INFO: Use gpu: [1]"
[ "$nnapi" = 1 ] && echo "INFO: Use NNAPI: [1]"
echo "INFO: Use xnnpack: [$xnn]"
if [ -z "$graph" ]; then
  echo "ERROR: Please specify the name of your TF Lite input file with --graph"; echo "ERROR: Benchmarking failed."; exit 1
fi
if [ ! -r "$graph" ]; then
  echo "ERROR: Could not open '$graph'."; echo "ERROR: Failed to mmap model $graph"; echo "ERROR: Benchmarking failed."; exit 1
fi
echo "INFO: Loaded model $graph"
echo "INFO: Initialized TensorFlow Lite runtime."
if [ "$gpu" = 1 ]; then
  echo "INFO: Created TensorFlow Lite delegate for GPU."
  echo "INFO: GPU delegate created."
  echo "VERBOSE: Replacing 6 out of 8 node(s) with delegate (TfLiteGpuDelegateV2) node, yielding 2 partitions for the whole graph."
  echo "INFO: Initialized OpenCL-based API."
  echo "INFO: Created 2 GPU delegate kernels."
  echo "INFO: Explicitly applied GPU delegate, and the model graph will be partially executed by the delegate w/ 2 delegate kernels."
elif [ "$xnn" = 1 ]; then
  echo "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
  echo "INFO: XNNPACK delegate created."
  echo "VERBOSE: Replacing 8 out of 8 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions for the whole graph."
  echo "INFO: Explicitly applied XNNPACK delegate, and the model graph will be completely executed by the delegate."
fi
size=$(wc -c < "$graph")
sleep "$min_secs" 2>/dev/null  # the steady state lasts at least --min_secs, as in the real tool
# memory lines: this process's own peak resident memory (VmHWM) plays the tool's footprint; init and overall are
# its deltas from the tool's start, as the real tool prints them
hwm=$(sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB$/\1/p' /proc/$$/status 2>/dev/null); hwm=${hwm:-4096}
awk -v size="$size" -v runs="$runs" -v warm="$warm" -v prof="$prof" -v minsecs="$min_secs" -v maxsecs="$max_secs" -v wsecs="$wsecs" -v hwm="$hwm" '
function stat(n, base, first,    i, v, sum, sq, mn, mx, avg, var, sd, s, j, k, tmp, out) {
  g_first = 0; g_avg = 0
  if (n == 0) return "count=0"
  sum = 0; sq = 0; mn = -1; mx = -1
  for (i = 0; i < n; i++) {
    v = (i == 0 && first > 0) ? first : base + (i * 37) % 23
    s[i] = v; sum += v; sq += v * v
    if (mn < 0 || v < mn) mn = v
    if (v > mx) mx = v
    last = v
  }
  g_first = s[0]; g_avg = sprintf("%g", sum / n)
  if (mn == mx) {
    out = "count=" n " curr=" last
    if (n > 1) out = out "(all same)"
  } else {
    avg = sum / n
    var = int(sq / n - avg * avg)
    sd = int(sqrt(var))
    out = sprintf("count=%d first=%d curr=%d min=%d max=%d avg=%g std=%d", n, s[0], last, mn, mx, avg, sd)
  }
  for (i = 1; i < n; i++) { tmp = s[i]; j = i - 1; while (j >= 0 && s[j] > tmp) { s[j + 1] = s[j]; j-- } s[j + 1] = tmp }
  out = out sprintf(" p5=%d median=%d p95=%d", s[int(n * 5 / 100)], s[int(n * 50 / 100)], s[int(n * 95 / 100)])
  return out
}
BEGIN {
  printf "INFO: The input model file size (MB): %g\n", size / 1e6
  print "INFO: Initialized session in 3.217ms."
  printf "INFO: Running benchmark for at least %d iterations and at least %g seconds but terminate if exceeding %g seconds.\n", warm, wsecs, maxsecs
  w = stat(warm, 290, 1204); wfirst = g_first; wavg = g_avg; print "INFO: " w; print ""
  printf "INFO: Running benchmark for at least %d iterations and at least %g seconds but terminate if exceeding %g seconds.\n", runs, minsecs, maxsecs
  r = stat(runs, 250, 0); ravg = g_avg; print "INFO: " r; print ""
  printf "INFO: Inference timings in us: Init: 3217, First inference: %d, Warmup (avg): %s, Inference (avg): %s\n", wfirst, wavg, ravg
  print "INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion."
  peak = hwm / 1024.0
  printf "INFO: Memory footprint delta from the start of the tool (MB): init=%g overall=%g\n", peak * 0.3, peak * 0.5
  printf "INFO: Overall peak memory footprint (MB) via periodic monitoring: %g\n", peak
  print "INFO: Memory status at the end of exeution:"
  printf "INFO: - VmRSS              : %d MB\n", peak
  printf "INFO: + RssAnnon           : %d MB\n", peak / 2
  printf "INFO: + RssFile + RssShmem : %d MB\n", peak - int(peak / 2)
  if (prof == 1) {
    print "INFO: Operator-wise Profiling Info for Regular Benchmark Runs:"
    print "============================== Run Order =============================="
    printf "\t%40s\t%9s\t%9s\t%8s\t%8s\t%10s\t%9s\t[Name]\n", "[node type]", "[first]", "[avg ms]", "[%]", "[cdf%]", "[mem KB]", "[times called]"
    printf "\t%40s\t%9.3f\t%9.3f\t%7.3f%%\t%7.3f%%\t%10.3f\t%9d\t%s\n", "CONV_2D", 0.101, 0.098, 39.200, 39.200, 0.0, 1, "[model/conv/Relu]:0"
    printf "\t%40s\t%9.3f\t%9.3f\t%7.3f%%\t%7.3f%%\t%10.3f\t%9d\t%s\n", "DEPTHWISE_CONV_2D", 0.061, 0.058, 23.200, 62.400, 0.0, 1, "[model/dw/BiasAdd]:1"
    printf "\t%40s\t%9.3f\t%9.3f\t%7.3f%%\t%7.3f%%\t%10.3f\t%9d\t%s\n", "CONV_2D", 0.085, 0.082, 32.800, 95.200, 0.0, 1, "[model/pw/Relu]:2"
    printf "\t%40s\t%9.3f\t%9.3f\t%7.3f%%\t%7.3f%%\t%10.3f\t%9d\t%s\n", "MEAN", 0.013, 0.012, 4.800, 100.000, 0.0, 1, "[model/gap/Mean]:3"
    print ""
    print "Timings (microseconds): " r
    print "Memory (bytes): count=0"
    print "4 nodes observed"
    print ""
  }
}'
