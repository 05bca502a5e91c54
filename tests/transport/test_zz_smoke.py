import time
def test_smoke(start_cluster):
    for mode in ("tls", "psk", "plaintext"):
        t=time.time()
        c = start_cluster(mode)
        leader = c.leader()
        print(mode, "leader after", time.time()-t)
        for i in range(5):
            r = leader.call("incr")
            assert "value" in r, r
        c.wait_value(5)
        follower = [n for n in c.nodes if n is not leader][0]
        print(follower.call("incr"))
        c.wait_value(6)
        print(mode, "ok", time.time()-t)
        c.stop()
