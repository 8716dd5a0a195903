"""A stand-in for ``adb`` and a phone, for the ``android`` device's tests (no phone is attached).

Run through the ``fake_adb`` shell wrapper next to it. It understands ``[-s SERIAL] devices |
version | push LOCAL REMOTE | shell WORDS...``, where the shell runs ``getprop [KEY]``,
``mkdir -p``, ``rm -f``, ``rmdir`` and a ``benchmark_model`` binary. What it prints is replayed
from the files next to it (see README.md). The environment sets the scene:

* ``FAKE_ADB_LOG``: a file to which each call's arguments are appended, one Python list
  literal a line (``ast.literal_eval``);
* ``FAKE_ADB_PHONE``: a folder that stands for the phone's file system (``/data/local/tmp/x`` is
  ``$FAKE_ADB_PHONE/data/local/tmp/x``); pushes land there and ``benchmark_model`` runs only where
  an executable file is there;
* ``FAKE_ADB_DEVICES``: the ``adb devices`` recording to replay (default ``devices_one.txt``);
  ``FAKE_ADB_STATE``: a state that overrides the listed one for commands run on a device (a phone
  unplugged after it was listed);
* ``FAKE_ADB_BENCH``: the ``benchmark_model`` recording (default ``benchmark_tf2_percentiles.txt``),
  ``FAKE_ADB_BENCH_STATUS`` its exit status (default 0);
* ``FAKE_ADB_SCALE=size``: every time in the recording's statistics and summary lines is
  multiplied by (size of the ``--graph`` file in bytes) / 1000, so that each model gets its own,
  predictable timings;
* ``FAKE_ADB_SLEEP``: seconds to sleep before ``benchmark_model`` answers.

The echoed parameters of the recording (``Num threads: [..]``, ``Graph: [..]``, ...) are
rewritten with the flags the call passed, as the real tool echoes what it was given.
"""

import os
import sys

# importing re costs more than the rest of a call: only the commands that need it import it

HERE = os.path.dirname(os.path.abspath(__file__))


def recording(name):
    with open(os.path.join(HERE, name), encoding="utf-8") as f:
        return f.read()


def fail(message, status=1):
    sys.stderr.write(message if message.endswith("\n") else message + "\n")
    sys.exit(status)


def on_phone(path):
    return os.path.join(os.environ["FAKE_ADB_PHONE"], path.lstrip("/"))


def listed_devices():
    out = []
    for line in recording(os.environ.get("FAKE_ADB_DEVICES", "devices_one.txt")).splitlines():
        if "\t" in line:
            serial, state = line.split("\t", 1)
            out.append((serial, state))
    return out


def target(serial):
    """Pick the device as adb does, and refuse what adb refuses."""
    devices = listed_devices()
    if serial is None:
        if not devices:
            fail("adb: no devices/emulators found")
        if len(devices) > 1:
            fail("adb: more than one device/emulator")
        serial, state = devices[0]
    else:
        states = dict(devices)
        if serial not in states:
            fail(f"adb: device '{serial}' not found")
        state = states[serial]
    state = os.environ.get("FAKE_ADB_STATE", state)
    if state == "unauthorized":
        fail(recording("adb_unauthorized.txt"))
    if state == "offline":
        fail("adb: device offline")


def number(value):
    """A float as C++'s ostream prints it by default (6 significant digits)."""
    return f"{value:.6g}"


def scale(text, factor):
    import re

    def times(match):
        return f"{match.group(1)}={number(float(match.group(2)) * factor)}"

    out = []
    for line in text.splitlines(keepends=True):
        if re.search(r"(^|\s)count=\d+", line):
            line = re.sub(r"\b(first|curr|min|max|avg|std|p5|median|p95)=([-+0-9.e]+)", times, line)
        elif "timings in us:" in line:
            head, _, rest = line.partition("timings in us:")
            rest = re.sub(r"(:\s*)([-+0-9.e]+)", lambda m: m.group(1) + number(float(m.group(2)) * factor), rest)
            line = head + "timings in us:" + rest
        out.append(line)
    return "".join(out)


def benchmark_model(words):
    import re
    import time

    exe = words[0]
    path = on_phone(exe)
    if not os.path.isfile(path):
        fail(f"/system/bin/sh: {exe}: inaccessible or not found", 127)
    if not os.access(path, os.X_OK):
        fail(f"/system/bin/sh: {exe}: can't execute: Permission denied", 126)
    flags = dict(w[2:].split("=", 1) for w in words[1:] if w.startswith("--") and "=" in w)
    graph = flags.get("graph", "")
    if not os.path.isfile(on_phone(graph)):
        fail(f"ERROR: Could not open '{graph}'.\nERROR: Failed to mmap model {graph}\nERROR: Benchmarking failed.")
    time.sleep(float(os.environ.get("FAKE_ADB_SLEEP", "0")))
    text = recording(os.environ.get("FAKE_ADB_BENCH", "benchmark_tf2_percentiles.txt"))
    echoed = {"Graph": graph, "Num threads": flags.get("num_threads"),
              "#threads used for CPU inference": flags.get("num_threads"), "Min num runs": flags.get("num_runs"),
              "Min warmup runs": flags.get("warmup_runs"),
              "Use xnnpack": {"true": "1", "false": "0"}.get(flags.get("use_xnnpack", ""))}
    for name, value in echoed.items():
        if value is not None:
            pattern = rf"(?m)^((?:[A-Z]+: )?{re.escape(name)}\s*: )\[.*\]$"
            text = re.sub(pattern, lambda m: f"{m.group(1)}[{value}]", text)
    text = re.sub(r"(?m)^((?:[A-Z]+: )?Loaded model ).*$", lambda m: m.group(1) + graph, text)
    if os.environ.get("FAKE_ADB_SCALE") == "size":
        text = scale(text, os.path.getsize(on_phone(graph)) / 1000)
    sys.stderr.write(text)  # TFLITE_LOG writes to stderr
    sys.exit(int(os.environ.get("FAKE_ADB_BENCH_STATUS", "0")))


def shell(words):
    if not words:
        fail("fake adb: interactive shell not supported")
    cmd, args = words[0], words[1:]
    if cmd == "getprop":
        import re

        props = dict(re.findall(r"^\[(.+?)\]: \[(.*)\]$", recording("getprop.txt"), re.M))
        print(props.get(args[0], "") if args else recording("getprop.txt"), end="" if not args else "\n")
    elif cmd == "mkdir":
        for d in (a for a in args if not a.startswith("-")):
            os.makedirs(on_phone(d), exist_ok=True)
    elif cmd == "rm":
        for f in (a for a in args if not a.startswith("-")):
            if os.path.isfile(on_phone(f)):
                os.remove(on_phone(f))
    elif cmd == "rmdir":
        for d in args:
            try:
                os.rmdir(on_phone(d))
            except OSError:
                fail(f"rmdir: '{d}': Directory not empty")
    elif cmd.startswith("/"):
        benchmark_model(words)
    else:
        fail(f"/system/bin/sh: {cmd}: inaccessible or not found", 127)


def main(argv):
    with open(os.environ["FAKE_ADB_LOG"], "a", encoding="utf-8") as log:
        log.write(repr(argv) + "\n")
    serial = None
    while argv and argv[0].startswith("-"):
        if argv[0] == "-s" and len(argv) > 1:
            serial, argv = argv[1], argv[2:]
        else:
            fail(f"adb: unknown option {argv[0]}")
    if not argv:
        fail("adb: no command")
    cmd, args = argv[0], argv[1:]
    if cmd == "version":
        print(recording("adb_version.txt"), end="")
    elif cmd == "devices":
        print(recording(os.environ.get("FAKE_ADB_DEVICES", "devices_one.txt")), end="")
    elif cmd == "push":
        target(serial)
        local, remote = args
        if not os.path.isfile(local):
            fail(f"adb: error: cannot stat '{local}': No such file or directory")
        dest = on_phone(remote)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with open(local, "rb") as src, open(dest, "wb") as out:
            out.write(src.read())
        size = os.path.getsize(local)
        print(f"{local}: 1 file pushed, 0 skipped. 4.2 MB/s ({size} bytes in 0.001s)")
    elif cmd == "shell":
        target(serial)
        # adb joins the words with spaces and the phone's sh splits them again (the device's words
        # never need quoting)
        shell(" ".join(args).split())
    else:
        fail(f"adb: unknown command {cmd}")


if __name__ == "__main__":
    main(sys.argv[1:])
