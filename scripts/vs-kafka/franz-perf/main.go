// franz-perf: the second client of scripts/bench-vs-kafka, which drives Apache Kafka and
// Tributary with the same load through franz-go (the first is Kafka's own Java tools).
// Every command prints one JSON line on success and exits non-zero with a message on error.
//
//	franz-perf create BOOTSTRAP TOPIC PARTITIONS RF [KEY=VALUE ...]
//	    creates the topic and waits until every partition has a leader; prints the time
//	franz-perf produce BOOTSTRAP TOPIC RECORDS SIZE ACKS RATE
//	    sends RECORDS records of SIZE bytes with acks 1 or all (-1), RATE records/s at most
//	    (-1: as fast as it can); prints MB/s, records/s and send-to-acknowledgement latency
//	    percentiles, as Kafka's ProducerPerformance measures them
//	franz-perf consume BOOTSTRAP TOPIC RECORDS
//	    reads RECORDS records from the start of every partition without a group
//	franz-perf wait-ready BOOTSTRAP TOPIC PARTITIONS [BROKER]
//	    waits until every partition has a leader (and, with BROKER, that broker in its ISR)
//	    and answers ListOffsets; prints the time it waited
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

const usage = `usage:
  franz-perf create BOOTSTRAP TOPIC PARTITIONS RF [KEY=VALUE ...]
  franz-perf produce BOOTSTRAP TOPIC RECORDS SIZE ACKS RATE
  franz-perf consume BOOTSTRAP TOPIC RECORDS
  franz-perf wait-ready BOOTSTRAP TOPIC PARTITIONS [BROKER]`

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "franz-perf: "+format+"\n", args...)
	os.Exit(1)
}

func number(name, value string) int {
	n, err := strconv.Atoi(value)
	if err != nil {
		fail("%s must be a whole number, not %q\n%s", name, value, usage)
	}
	return n
}

func print(result map[string]any) {
	line, _ := json.Marshal(result)
	fmt.Println(string(line))
}

func main() {
	if len(os.Args) < 2 {
		fail("no command\n%s", usage)
	}
	args := os.Args[2:]
	var seeds []string
	if len(args) > 0 {
		seeds = strings.Split(args[0], ",")
	}
	switch {
	case os.Args[1] == "create" && len(args) >= 4:
		create(seeds, args[1], number("PARTITIONS", args[2]), number("RF", args[3]), args[4:])
	case os.Args[1] == "produce" && len(args) == 6:
		acks := args[4]
		if acks != "1" && acks != "all" && acks != "-1" {
			fail("ACKS must be 1 or all, not %q", acks)
		}
		produce(seeds, args[1], number("RECORDS", args[2]), number("SIZE", args[3]), acks != "1", number("RATE", args[5]))
	case os.Args[1] == "consume" && len(args) == 3:
		consume(seeds, args[1], number("RECORDS", args[2]))
	case os.Args[1] == "wait-ready" && (len(args) == 3 || len(args) == 4):
		broker := -1
		if len(args) == 4 {
			broker = number("BROKER", args[3])
		}
		waitReady(seeds, args[1], number("PARTITIONS", args[2]), int32(broker))
	default:
		fail("wrong command or arguments: %q\n%s", os.Args[1:], usage)
	}
}

func admin(seeds []string) (*kgo.Client, *kadm.Client) {
	client, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		fail("client: %v", err)
	}
	return client, kadm.NewClient(client)
}

func create(seeds []string, topic string, partitions, rf int, settings []string) {
	client, adm := admin(seeds)
	defer client.Close()
	// Thousands of partitions may take a broker longer than kadm's 15 s default.
	adm.SetTimeoutMillis(int32((4 * time.Minute).Milliseconds()))
	configs := map[string]*string{}
	for _, setting := range settings {
		key, value, ok := strings.Cut(setting, "=")
		if !ok {
			fail("topic settings are KEY=VALUE, not %q", setting)
		}
		configs[key] = &value
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	created, err := adm.CreateTopic(ctx, int32(partitions), int16(rf), configs, topic)
	if err == nil {
		err = created.Err
	}
	if err != nil {
		fail("create topic %s: %v", topic, err)
	}
	ready(ctx, client, topic, partitions, -1)
	print(map[string]any{"topic": topic, "partitions": partitions, "ms": time.Since(start).Milliseconds()})
}

// ready polls until every partition of the topic has a leader (and broker, unless it is -1,
// in its ISR) and the leaders answer ListOffsets for all of them.
func ready(ctx context.Context, client *kgo.Client, topic string, partitions int, broker int32) {
	adm := kadm.NewClient(client)
	for {
		if err := ctx.Err(); err != nil {
			fail("topic %s not ready: %v", topic, err)
		}
		if led(ctx, client, topic, partitions, broker) {
			ends, err := adm.ListEndOffsets(ctx, topic)
			if err == nil && ends.Error() == nil && len(ends[topic]) == partitions {
				return
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func led(ctx context.Context, client *kgo.Client, topic string, partitions int, broker int32) bool {
	// A request of its own each time: kadm's Metadata answers from a cache for 5 s.
	request := kmsg.NewPtrMetadataRequest()
	wanted := kmsg.NewMetadataRequestTopic()
	wanted.Topic = &topic
	request.Topics = append(request.Topics, wanted)
	response, err := request.RequestWith(ctx, client)
	if err != nil || len(response.Topics) != 1 {
		return false
	}
	detail := response.Topics[0]
	if detail.ErrorCode != 0 || len(detail.Partitions) != partitions {
		return false
	}
	for _, partition := range detail.Partitions {
		if partition.ErrorCode != 0 || partition.Leader < 0 {
			return false
		}
		if broker >= 0 && !slices.Contains(partition.ISR, broker) {
			return false
		}
	}
	return true
}

func waitReady(seeds []string, topic string, partitions int, broker int32) {
	start := time.Now()
	// Until a listener accepts connections; the client's own retries back off for seconds.
	for {
		conn, err := net.DialTimeout("tcp", seeds[0], time.Second)
		if err == nil {
			conn.Close()
			break
		}
		if time.Since(start) > 10*time.Minute {
			fail("nothing listens on %s: %v", seeds[0], err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	client, _ := admin(seeds)
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	ready(ctx, client, topic, partitions, broker)
	print(map[string]any{"topic": topic, "ms": time.Since(start).Milliseconds()})
}

func produce(seeds []string, topic string, records, size int, all bool, rate int) {
	options := []kgo.Opt{kgo.SeedBrokers(seeds...), kgo.DefaultProduceTopic(topic), kgo.ProducerBatchCompression(kgo.NoCompression())}
	if all {
		options = append(options, kgo.RequiredAcks(kgo.AllISRAcks()))
	} else {
		// franz-go's idempotent producer needs acks=all, as Kafka's Java client does.
		options = append(options, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	}
	client, err := kgo.NewClient(options...)
	if err != nil {
		fail("producer: %v", err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()

	value := make([]byte, size)
	for i := range value {
		value[i] = byte('a' + i%26)
	}
	latencies := make([]time.Duration, records)
	var failed error
	var mu sync.Mutex
	start := time.Now()
	for i := range records {
		if rate > 0 {
			if wait := time.Until(start.Add(time.Duration(i) * time.Second / time.Duration(rate))); wait > 0 {
				time.Sleep(wait)
			}
		}
		sent := time.Now()
		client.Produce(ctx, &kgo.Record{Value: value}, func(_ *kgo.Record, err error) {
			latencies[i] = time.Since(sent)
			if err != nil {
				mu.Lock()
				failed = errors.Join(failed, err)
				mu.Unlock()
			}
		})
	}
	if err := client.Flush(ctx); err != nil {
		fail("flush: %v", err)
	}
	elapsed := time.Since(start).Seconds()
	if failed != nil {
		fail("records were not acknowledged: %v", failed)
	}
	slices.Sort(latencies)
	at := func(q float64) float64 {
		return float64(latencies[min(len(latencies)-1, int(q*float64(len(latencies))))].Microseconds()) / 1000
	}
	print(map[string]any{
		"records": records, "seconds": elapsed,
		"records_per_s": float64(records) / elapsed, "mb_per_s": float64(records*size) / elapsed / (1 << 20),
		"p50_ms": at(0.5), "p99_ms": at(0.99), "p999_ms": at(0.999), "max_ms": at(1),
	})
}

func consume(seeds []string, topic string, records int) {
	client, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
	if err != nil {
		fail("consumer: %v", err)
	}
	defer client.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	read, bytes := 0, 0
	start := time.Now()
	for read < records {
		fetches := client.PollFetches(ctx)
		if err := ctx.Err(); err != nil {
			fail("read %d of %d records: %v", read, records, err)
		}
		fetches.EachError(func(topic string, partition int32, err error) {
			fail("fetch %s-%d: %v", topic, partition, err)
		})
		fetches.EachRecord(func(record *kgo.Record) {
			read++
			bytes += len(record.Value)
		})
	}
	elapsed := time.Since(start).Seconds()
	print(map[string]any{
		"records": read, "seconds": elapsed,
		"records_per_s": float64(read) / elapsed, "mb_per_s": float64(bytes) / elapsed / (1 << 20),
	})
}
