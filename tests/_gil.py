"""Whether a call releases the GIL: shared by the kernel and convolution tests."""
import sys
import threading
import time


def releases_gil(call, seconds=3.0):
    """True when ``call()`` released the GIL at least once within ``seconds``.

    With a huge switch interval a thread holding the GIL is never preempted, so the main
    thread can only run while the worker is inside a call that released it. The worker
    calls until the main thread has run once, or until ``seconds`` have passed (then the
    call kept the GIL). Returns ``(released, calls)``.
    """
    state = {"started": False, "seen": False, "calls": 0, "released": False}

    def worker():
        state["started"] = True
        deadline = time.monotonic() + seconds
        while not state["seen"] and time.monotonic() < deadline:
            call()
            state["calls"] += 1
        state["released"] = state["seen"]  # read here: later sightings do not count

    old = sys.getswitchinterval()
    sys.setswitchinterval(1000.0)
    try:
        thread = threading.Thread(target=worker)
        thread.start()
        while thread.is_alive():
            if state["started"]:
                state["seen"] = True
            time.sleep(1e-5)   # lets the worker take the GIL back
        thread.join()
    finally:
        sys.setswitchinterval(old)
    return state["released"], state["calls"]
