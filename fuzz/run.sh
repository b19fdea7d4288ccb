#!/usr/bin/env bash
# Bounded fuzzing of the parsers that read hostile input: builds every target in fuzz/ with a
# pinned cargo-fuzz on the stable toolchain, runs each for FUZZ_SECONDS (default 20) from the
# committed seeds, and fails when any target crashes, printing the saved crash input and how to
# replay it. CI runs it from .ci/run; it runs as well on its own: `bash fuzz/run.sh`.
set -euo pipefail
cd "$(dirname "$0")"
root="$(cd .. && pwd)"

CARGO_FUZZ_VERSION=0.13.2
seconds="${FUZZ_SECONDS:-20}"
targets=(token_parser permission_matching cidr_parsing envoy_mapping signature_parsing admin_request request_target)

# No sanitizer: Tessera forbids unsafe code, so AddressSanitizer would watch only the standard
# library and dependencies, while it needs nightly (-Zsanitizer) and slows every input. Without
# it cargo-fuzz passes only stable rustc flags (SanitizerCoverage through -Cpasses and
# -Cllvm-args), so the stable toolchain builds the targets as it is, without RUSTC_BOOTSTRAP.
# --dev: the build is most of this script's time on 2 cores; fuzz/Cargo.toml's dev profile
# optimizes only Tessera and the targets, and keeps debug assertions and overflow checks.
build_flags=(--dev --sanitizer none)

tools="$root/.ci/cargo"
if [ "$("$tools/bin/cargo-fuzz" --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]; then
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --root "$tools"
fi
export PATH="$tools/bin:$PATH"

# cargo fuzz has no --locked: refuse here when fuzz/Cargo.lock would have to change.
cargo fetch --locked --manifest-path Cargo.toml --quiet
cargo fuzz build "${build_flags[@]}"

# libFuzzer adds what it finds to its first corpus directory: a scratch one, so the committed
# seeds (read-only, second) stay as they are.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
for target in "${targets[@]}"; do
    mkdir -p "$scratch/corpus/$target"
    log="$scratch/$target.log"
    echo "fuzz: $target for ${seconds}s"
    if cargo fuzz run "${build_flags[@]}" "$target" "$scratch/corpus/$target" "seeds/$target" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 >"$log" 2>&1; then
        runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")"
        rate="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")"
        echo "fuzz: $target ok: ${runs:-?} inputs, ${rate:-?} per second"
    else
        failed+=("$target")
        tail -n 40 "$log"
        crash="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
        if [ -n "$crash" ]; then
            case "$crash" in
                /*) ;;
                *) crash="$PWD/${crash#./}" ;;
            esac
            echo "fuzz: $target FAILED; crash input: $crash"
            echo "fuzz: replay: (cd fuzz && PATH=\"$tools/bin:\$PATH\" cargo fuzz run ${build_flags[*]} $target $crash)"
        else
            echo "fuzz: $target FAILED without a saved input (see the log above)"
        fi
    fi
done

if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: failed: ${failed[*]}" >&2
    exit 1
fi
echo "fuzz: all ${#targets[@]} targets ran ${seconds}s each without a crash"
