#!/usr/bin/env bash
# scripts/test.sh - THE test command of libdbpool (also what .ci/run runs).
#
#   bash scripts/test.sh [normal] [asan] [tsan] [valgrind] [fuzz]    (default: all, in order)
#
# Installs what is missing (scripts/deps.sh), then for each configuration in turn configures,
# builds (-j2) and runs ctest against a real MariaDB server (the ctest fixture starts one, see
# tests/dbserver.sh); a server that cannot be provided is a failure, never a skip:
#   normal    build/            RelWithDebInfo, everything (examples, install and header tests)
#   asan      build-asan/       -fsanitize=address,undefined, DBPOOL_TEST_SCALE=0.5
#   tsan      build-tsan/       -fsanitize=thread (tests/tsan.supp), DBPOOL_TEST_SCALE=0.2
#   valgrind  build-valgrind/   every test under valgrind memcheck, DBPOOL_TEST_SCALE=0.1
#   fuzz      build-fuzz/       clang, -DDBPOOL_BUILD_FUZZ=ON, ctest -L fuzz
# Tests without the "integration" label run in parallel (-j2); integration tests run in 2 lanes,
# each lane with its own local MariaDB (ctest resource groups), or one at a time when the server
# is external or a container (shared).
#
# Ends with a per-configuration summary, the skipped tests, and a last line
# "N passed, N failed[, N skipped]" over all configurations. Exit status 0 only if nothing failed
# (a build that fails counts as one failed test).
#
# Environment: DBPOOL_BUILD_PREFIX (default "build": build dirs are build, build-asan, ...),
# DBPOOL_JOBS (2: build jobs, unit test jobs and integration lanes), DBPOOL_TEST_LANES (lanes,
# default DBPOOL_JOBS), DBPOOL_SKIP_DEPS=1 (do not run scripts/deps.sh), DBPOOL_TEST_HOST & co.
# (an external server, see tests/dbserver.sh), DBPOOL_TEST_KEEP=1 (keep server data dirs).
set -uo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root" || exit 1
prefix=${DBPOOL_BUILD_PREFIX:-build}
jobs=${DBPOOL_JOBS:-2}
start_all=$SECONDS

if [ "${DBPOOL_SKIP_DEPS:-0}" != 1 ]; then
    bash scripts/deps.sh || {
        echo "test.sh: missing dependencies (see above)" >&2
        echo "0 passed, 1 failed"
        exit 1
    }
fi

configs=("$@")
[ "${#configs[@]}" -gt 0 ] || configs=(normal asan tsan valgrind fuzz)

# The suite never runs as a skip for want of a server.
export DBPOOL_TEST_REQUIRE_SERVER=1
# A stray DB_* setting of the caller must not reach the tests or the examples.
for v in $(compgen -e | grep -E '^DB_' || true); do unset "$v"; done

total_pass=0 total_fail=0 total_skip=0
summary=()
skipped_list=()
failed_list=()

# Count the result lines of a ctest log: pass, fail, skip (Not Run, Timeout, ... are failures).
count_results() { # log -> sets c_pass c_fail c_skip; appends names to lists
    local log=$1 line name
    c_pass=0 c_fail=0 c_skip=0
    while IFS= read -r line; do
        name=$(sed -E 's/^ *[0-9]+\/[0-9]+ Test +#[0-9]+: ([^ ]+) .*/\1/' <<<"$line")
        case $line in
        *" Passed "*) c_pass=$((c_pass + 1)) ;;
        *"Skipped "*)
            c_skip=$((c_skip + 1))
            skipped_list+=("$cfg: $name")
            ;;
        *)
            c_fail=$((c_fail + 1))
            failed_list+=("$cfg: $name ($(sed -E 's/.*\*\*\*([^0-9]*[A-Za-z)]).*/\1/' <<<"$line"))")
            ;;
        esac
    done < <(grep -E '^ *[0-9]+/[0-9]+ Test +#[0-9]+: ' "$log" || true)
}

run_ctest() { # dir log extra-args...
    local dir=$1 log=$2
    shift 2
    (cd "$dir" && ctest --output-on-failure --no-tests=ignore "$@") 2>&1 | tee -a "$log"
}

run_config() {
    cfg=$1
    local dir cc=cc flags="" btype=RelWithDebInfo t0 tb tt log scale=1
    local cmake_args=() env_vars=() ctest_sets=()
    case $cfg in
    normal)
        dir=$prefix
        cmake_args=(-DDBPOOL_BUILD_EXAMPLES=ON -DDBPOOL_BUILD_BENCH=ON)
        ctest_sets=(unit integration)
        ;;
    asan)
        dir=$prefix-asan
        btype=Debug
        flags="-O1 -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all"
        scale=0.5
        cmake_args=(-DDBPOOL_BUILD_EXAMPLES=ON -DDBPOOL_BUILD_BENCH=OFF)
        env_vars=(
            "ASAN_OPTIONS=detect_leaks=1:halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=1:strict_string_checks=1:check_initialization_order=1"
            "UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1")
        ctest_sets=(unit integration)
        ;;
    tsan)
        dir=$prefix-tsan
        btype=Debug
        flags="-O1 -fsanitize=thread -fno-omit-frame-pointer"
        scale=0.2
        cmake_args=(-DDBPOOL_BUILD_EXAMPLES=ON -DDBPOOL_BUILD_BENCH=OFF)
        # die_after_fork=0: the fork tests start threads in the child of a threaded parent.
        env_vars=("TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1:die_after_fork=0:suppressions=$root/tests/tsan.supp")
        ctest_sets=(unit integration)
        ;;
    valgrind)
        dir=$prefix-valgrind
        scale=0.1
        cmake_args=(-DDBPOOL_VALGRIND=ON -DDBPOOL_BUILD_EXAMPLES=ON -DDBPOOL_BUILD_BENCH=OFF)
        ctest_sets=(unit integration)
        ;;
    fuzz)
        dir=$prefix-fuzz
        cc=$(command -v clang || command -v clang-14 || echo clang)
        cmake_args=(-DDBPOOL_BUILD_FUZZ=ON -DDBPOOL_BUILD_EXAMPLES=OFF -DDBPOOL_BUILD_BENCH=OFF)
        ctest_sets=(fuzz)
        ;;
    *)
        echo "test.sh: unknown configuration '$cfg' (normal asan tsan valgrind fuzz)" >&2
        summary+=("$(printf '%-9s unknown configuration' "$cfg")")
        total_fail=$((total_fail + 1))
        return
        ;;
    esac
    log="$root/$dir/test-results.log"
    echo
    echo "================ $cfg: $dir/ ================"
    t0=$SECONDS
    mkdir -p "$dir"
    : >"$log"
    # Every option explicitly: a build directory may carry a cache from other options.
    cmake_args=(-DDBPOOL_BUILD_TESTS=ON -DDBPOOL_VALGRIND=OFF -DDBPOOL_BUILD_FUZZ=OFF
        -DDBPOOL_WERROR=ON "${cmake_args[@]}")
    command -v ccache >/dev/null 2>&1 && cmake_args+=(-DCMAKE_C_COMPILER_LAUNCHER=ccache)
    # Build output without the progress lines: warnings and errors stay visible.
    if ! CC=$cc cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=$btype -DCMAKE_C_COMPILER="$cc" \
        -DCMAKE_C_FLAGS="$flags" "${cmake_args[@]}" 2>&1 | tee -a "$log" | tail -n 3 ||
        ! cmake --build "$dir" -j "$jobs" 2>&1 | tee -a "$log" |
        { grep -vE '^\[ *[0-9]+%\] (Building|Linking|Built)|^Consolidate compiler' || true; }; then
        tb=$((SECONDS - t0))
        echo "test.sh: $cfg: configure or build failed (log: $log)"
        summary+=("$(printf '%-9s %-22s BUILD FAILED after %ds' "$cfg" "$dir/" "$tb")")
        failed_list+=("$cfg: build")
        total_fail=$((total_fail + 1))
        return
    fi
    tb=$((SECONDS - t0))
    write_lanes_spec "$root/$dir/dbserver-lanes.json"
    local p=0 f=0 s=0 set
    for set in "${ctest_sets[@]}"; do
        local sublog="$root/$dir/test-$set.log"
        : >"$sublog"
        echo "---- $cfg: ctest ($set) ----"
        (
            [ "${#env_vars[@]}" -gt 0 ] && export "${env_vars[@]}"
            export DBPOOL_TEST_SCALE=$scale
            case $set in
            unit) run_ctest "$dir" "$sublog" -LE 'integration|fuzz' -j "$jobs" ;;
            integration)
                if [ "$lanes" -gt 1 ]; then
                    # One local server per lane; ctest gives each test a lane of its own.
                    export DBPOOL_TEST_LANES=$lanes
                    run_ctest "$dir" "$sublog" -L integration -j "$lanes" \
                        --resource-spec-file "$root/$dir/dbserver-lanes.json"
                else
                    run_ctest "$dir" "$sublog" -L integration
                fi
                ;;
            fuzz) run_ctest "$dir" "$sublog" -L fuzz -j "$jobs" ;;
            esac
        )
        cat "$sublog" >>"$log"
        count_results "$sublog"
        p=$((p + c_pass)) f=$((f + c_fail)) s=$((s + c_skip))
    done
    tt=$((SECONDS - t0 - tb))
    total_pass=$((total_pass + p)) total_fail=$((total_fail + f)) total_skip=$((total_skip + s))
    summary+=("$(printf '%-9s %-22s %4d passed, %d failed, %d skipped   (build %ds, tests %ds)' \
        "$cfg" "$dir/" "$p" "$f" "$s" "$tb" "$tt")")
}

# Integration tests run in parallel lanes, each against its own local server (see
# tests/dbserver.sh); an external or container server is shared, so its tests run one by one.
lanes=${DBPOOL_TEST_LANES:-$jobs}
if [ "$(bash tests/dbserver.sh kind)" != local ]; then
    lanes=1
fi
write_lanes_spec() { # file
    local k sep=""
    {
        printf '{"version": {"major": 1, "minor": 0}, "local": [{"dbserver": ['
        for ((k = 0; k < lanes; k++)); do
            printf '%s{"id": "%d", "slots": 1}' "$sep" "$k"
            sep=", "
        done
        printf ']}]}\n'
    } >"$1"
}

for c in "${configs[@]}"; do
    run_config "$c"
done

echo
echo "================ summary ($((SECONDS - start_all)) s) ================"
printf '%s\n' "${summary[@]}"
if [ "${#failed_list[@]}" -gt 0 ]; then
    echo "failed:"
    printf '  %s\n' "${failed_list[@]}"
fi
if [ "${#skipped_list[@]}" -gt 0 ]; then
    echo "skipped:"
    printf '  %s\n' "${skipped_list[@]}"
fi
if [ "$total_skip" -gt 0 ]; then
    echo "$total_pass passed, $total_fail failed, $total_skip skipped"
else
    echo "$total_pass passed, $total_fail failed"
fi
[ "$total_fail" -eq 0 ]
