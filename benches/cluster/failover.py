# Failover time: leader SIGKILL -> first acks=all produce acknowledged after it.
# usage: failover.py BOOTSTRAP TOPIC LEADER_PID (see bench.sh failover)
import os, signal, sys, time
from confluent_kafka import Producer
bootstrap, topic, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
p = Producer({"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": True,
              "linger.ms": 0, "message.timeout.ms": 60000, "topic.metadata.refresh.interval.ms": 250,
              "retry.backoff.ms": 20, "retry.backoff.max.ms": 100})
acked = []
def done(err, msg):
    if err is None:
        acked.append(time.monotonic())
for i in range(200):
    p.produce(topic, b"warm"); p.flush(10)
killed = None
i = 0
while True:
    sent = time.monotonic()
    p.produce(topic, b"x", on_delivery=done)
    p.poll(0.001)
    i += 1
    if killed is None and i == 50:
        p.flush(10)
        os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        killed_at = time.strftime("%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}"
    if killed is not None and acked and acked[-1] > killed:
        break
    if killed is not None and time.monotonic() - killed > 60:
        print("no ack within 60 s"); sys.exit(1)
    time.sleep(0.002)
p.flush(30)
first = min(t for t in acked if t > killed)
print(f"failover {first - killed:.3f} s (SIGKILL at {killed_at} UTC)")
