#!/bin/bash
# Three local `oxbow serve` processes (release build), the cluster numbers of benches/RESULTS.md:
#   bench.sh throughput RUNS [bench args]  RF=1 against RF=3, alternated (default 1 KiB acks=all)
#   bench.sh latency RATE RUNS             produce+consume end-to-end latency on RF=3 at RATE msg/s
#   bench.sh idle                          CPU of three idle brokers with a 30-partition RF=3 topic
#   bench.sh failover RUNS                 leader SIGKILL -> first acks=all ack after it
# Extra [cluster] settings for every node: CLUSTER_EXTRA="broker_session_timeout_ms = 1500".
# Needs python3 with confluent-kafka. Work files go to $WORK (default /tmp/oxbow-cluster-bench).
set -u
HERE=$(cd "$(dirname "$0")" && pwd)
B=${OXBOW:-$HERE/../../target/release/oxbow}
WORK=${WORK:-/tmp/oxbow-cluster-bench}
mkdir -p "$WORK"
cd "$WORK"

start() {
    pkill -9 -f "oxbow serve --config $WORK" ; sleep 1
    rm -rf d0 d1 d2
    for i in 0 1 2; do
        cat > n$i.toml <<TOML
pin_shards = false
node_id = $i
shards = 1
data_dir = "$WORK/d$i"
kafka_listen = "127.0.0.1:1909$i"
native_listen = "127.0.0.1:1919$i"
metrics_listen = "127.0.0.1:1929$i"
[cluster]
listen = "127.0.0.1:1939$i"
initial_voters = ["0@127.0.0.1:19390", "1@127.0.0.1:19391", "2@127.0.0.1:19392"]
tls_dir = "$WORK/tls"
${CLUSTER_EXTRA:-}
TOML
        $B serve --config "$WORK/n$i.toml" > n$i.log 2>&1 &
        echo $! > n$i.pid
    done
}
stop() { pkill -9 -f "oxbow serve --config $WORK"; }
create() { # TOPIC PARTITIONS RF
    for _ in $(seq 60); do
        python3 "$HERE/create.py" 127.0.0.1:19090 "$1" "$3" "$2" >/dev/null 2>&1 && return; sleep 0.5
    done
    echo "could not create $1" >&2; exit 1
}
leader() { python3 -c "
from confluent_kafka.admin import AdminClient
m = AdminClient({'bootstrap.servers': '127.0.0.1:19090'}).list_topics(timeout=10)
print(m.topics['$1'].partitions[0].leader)"; }
summary() { tail -4 | sed -n '2p;4p' | tr '\n' ' '; echo; }

case "${1:-}" in
throughput)
    runs=$2; shift 2
    start; create rf1 1 1; create rf3 1 3
    for r in $(seq "$runs"); do
        for t in rf1 rf3; do
            echo -n "$t run $r: "
            $B bench --protocol kafka --broker 127.0.0.1:1909$(leader $t) --workload produce \
                --topic $t --partitions 1 --producers 2 --rate max --duration 8s \
                --message-size 1024 --acks all "$@" 2>&1 | summary
        done
    done
    stop ;;
latency)
    start; create rf3 1 3
    for r in $(seq "$3"); do
        echo -n "run $r: "
        $B bench --protocol kafka --broker 127.0.0.1:1909$(leader rf3) --workload produce-consume \
            --topic rf3 --partitions 1 --producers 2 --consumers 1 --message-size 1024 \
            --rate "$2" --duration 8s --acks all 2>&1 | tail -6 | grep -E "publish|end-to-end" | tr '\n' ' '
        echo
    done
    stop ;;
idle)
    start; create idle 30 3; sleep 5
    cpu() { for p in $(cat n0.pid n1.pid n2.pid); do awk '{print $14+$15}' /proc/$p/stat; done | paste -sd+ | bc; }
    a=$(cpu); sleep 10; b=$(cpu)
    echo "idle CPU: $(echo "scale=2; ($b-$a)/100/10" | bc) cores"
    stop ;;
failover)
    start; create rf3 1 3
    for r in $(seq "$2"); do
        for _ in $(seq 100); do # every node agrees, all three in sync
            views=""; for n in 0 1 2; do views="$views|$(python3 -c "
from confluent_kafka.admin import AdminClient
p = AdminClient({'bootstrap.servers': '127.0.0.1:1909$n'}).list_topics(timeout=10).topics['rf3'].partitions[0]
print(p.leader, len(p.isrs))" 2>/dev/null)"; done
            first=$(echo "$views" | cut -d'|' -f2)
            [ "$views" = "|$first|$first|$first" ] && [ "${first#* }" = 3 ] && break; sleep 0.3
        done
        l=${first% *}; o=$(( (l + 1) % 3 ))
        ml=$(curl -s 127.0.0.1:1929$o/metrics | awk '/^oxbow_metadata_leader /{print $2}')
        echo -n "run $r: partition leader $l, metadata leader $ml: "
        python3 "$HERE/failover.py" 127.0.0.1:1909$o rf3 "$(cat n$l.pid)" 2>/dev/null | grep failover
        $B serve --config "$WORK/n$l.toml" > n$l.log 2>&1 &
        echo $! > n$l.pid
    done
    stop ;;
*) sed -n '2,8p' "$0"; exit 2 ;;
esac
