# Hull. `make setup` installs everything and runs the demo; `make test` runs
# every test (unit, integration, end to end); `make bench` the benchmarks.
CARGO ?= cargo
TARGET := x86_64-unknown-linux-gnu
AGENT := target/$(TARGET)/release/hull-agent
BOOT := target/$(TARGET)/release/hull-boot
GUEST := build/guest

.PHONY: all build agent image install setup demo cache density test unit manifests rpc conformance e2e soak hostile-full boot-timeline bench bench-jail lint clean fuzz fuzz-smoke

all: image build

build:
	$(CARGO) build --release -p containerd-shim-hull-v2 -p hull-image -p hull-tools

# The agent is PID 1 of a bare initrd, hull-boot of an image's boot
# initrd: both statically linked. Naming --target
# keeps build scripts and proc macros out of the static flags.
agent:
	RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" $(CARGO) build --release -p hull-agent --target $(TARGET)

# The guest: vmlinux, the initrd, the minimal rootfs image (erofs with its
# dm-verity tree) with its small boot initrd, and the distro rootfs image
# (Debian by mmdebstrap, systemd starting the agent; the bootstrap is kept
# in build/guest/distro-base.tar). The debug initrd adds a shell (static
# busybox) for hull.debug_console=on.
image: agent build
	target/release/hull-image --agent $(AGENT) --boot $(BOOT) --out $(GUEST) --distro
	target/release/hull-image --agent $(AGENT) --out $(GUEST)-debug --debug-shell /bin/busybox --initrd-only

install: image
	bash scripts/install.sh

setup:
	bash scripts/setup.sh

demo:
	bash scripts/demo.sh

# hull-cache in the foreground, by hand (Ctrl-C ends it and the VMs still
# waiting; VMs already taken stay with their pods). `make setup` runs it as
# a service instead: the systemd unit, or scripts/cache.sh without systemd.
cache: install
	/usr/local/bin/hull-cache

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

unit:
	$(CARGO) test --workspace --exclude hull-tests

# The agent's API suite: the static agent as a root process on this host.
rpc: agent
	$(CARGO) test -p hull-tests --test agent_rpc

# OCI conformance of hull-jail, with runc and crun run through the same
# checks (root; real namespaces, mounts, cgroups).
conformance: build
	$(CARGO) test -p hull-tests --test conformance

# deploy/: manifests and containerd snippets against the API types they use.
manifests:
	$(CARGO) test -p hull-tests --test deploy

e2e: install
	$(CARGO) test -p hull-tests --test e2e

test: lint unit manifests fuzz-smoke rpc conformance e2e

# The soak and fault suite at full size (make e2e runs it small): plain
# cycles (ctr tasks and CRI pods, alternating; SOAK_HOURS keeps them going
# that long), fault cycles (kill -9 at each step, containerd restarted in
# the middle), pods at once, execs at once and PID reuse. Both containerd
# versions; HULL_E2E_CONTAINERD=1.6 (or 2.3) for one.
SOAK_CYCLES ?= 500
SOAK_FAULTS ?= 64
SOAK_PODS ?= 20
SOAK_EXECS ?= 50
SOAK_HOURS ?= 0
soak: install
	HULL_SOAK_CYCLES=$(SOAK_CYCLES) HULL_SOAK_FAULTS=$(SOAK_FAULTS) HULL_SOAK_PODS=$(SOAK_PODS) \
	HULL_SOAK_EXECS=$(SOAK_EXECS) HULL_SOAK_HOURS=$(SOAK_HOURS) HULL_E2E_LIMIT_MINUTES=0 \
	$(CARGO) test -p hull-tests --test e2e -- soak_

# The hostile-guest cases at full size (make e2e runs the console flood with
# 4 MiB): the guest writes FLOOD_CONSOLE_MIB MiB to its serial console,
# about 35 minutes for 1 GiB under TCG.
FLOOD_CONSOLE_MIB ?= 1024
hostile-full: install
	HULL_FLOOD_CONSOLE_MIB=$(FLOOD_CONSOLE_MIB) HULL_E2E_LIMIT_MINUTES=0 \
	$(CARGO) test -p hull-tests --test e2e -- console_flood

# Coverage-guided fuzzing (cargo fuzz, libFuzzer, stable toolchain) of what
# the host parses from the guest: FUZZ_SECONDS per target; the seeds in
# fuzz/seeds, the corpus grown in build/fuzz. `fuzz-smoke` is make test's
# short run (a faster-built debug build with overflow checks).
FUZZ_TARGETS := agent_reply guest_log vsock_reply console_text start_stdin
FUZZ_SECONDS ?= 300
fuzz:
	bash scripts/fuzz.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)

fuzz-smoke:
	FUZZ_PROFILE=dev bash scripts/fuzz.sh 10 $(FUZZ_TARGETS)

bench: install bench-jail
	bash scripts/bench.sh
	bash scripts/guest-root-bench.sh
	bash scripts/density.sh
	bash scripts/boot-timeline.sh

# Idle pods (one VM each) until PODS (100) run or host memory runs low:
# host memory per pod, PSS, idle CPU of all (make bench runs it too).
density: install
	bash scripts/density.sh

# Where a guest boot's time goes: the agent's steps over BOOT_RUNS quiet
# boots, the kernel's slowest initcalls from one verbose boot.
boot-timeline: install
	bash scripts/boot-timeline.sh

# hull-jail against runc and crun: the lifecycle of a `true` container.
bench-jail: build
	bash scripts/bench-jail.sh

clean:
	rm -rf build
	$(CARGO) clean
