// franz-go against Tributary, as the compatibility tests run it (broker/tests/kafka_clients.rs):
//
//	franz BOOTSTRAP TOPIC COUNT
//
// creates a six-partition topic with kadm, produces COUNT keyed records with franz-go's
// default idempotent producer (acks=all), then reads them back with two consumers in one
// group that share the partitions and commit, and checks that each record was read exactly
// once, in order per partition. Prints one JSON line; exits non-zero on any mismatch.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 4 {
		fail("usage: franz BOOTSTRAP TOPIC COUNT")
	}
	seeds := strings.Split(os.Args[1], ",")
	topic := os.Args[2]
	count, err := strconv.Atoi(os.Args[3])
	if err != nil {
		fail("COUNT: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	admin, err := kgo.NewClient(kgo.SeedBrokers(seeds...))
	if err != nil {
		fail("client: %v", err)
	}
	adm := kadm.NewClient(admin)
	brokers, err := adm.ListBrokers(ctx)
	if err != nil {
		fail("list brokers: %v", err)
	}
	rf := int16(min(3, len(brokers)))
	created, err := adm.CreateTopic(ctx, 6, rf, nil, topic)
	if err != nil || created.Err != nil {
		fail("create topic: %v %v", err, created.Err)
	}

	producer, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	if err != nil {
		fail("producer: %v", err)
	}
	for i := 0; i < count; i++ {
		value := strconv.Itoa(i)
		producer.Produce(ctx, &kgo.Record{Topic: topic, Key: []byte(value), Value: []byte(value)}, func(r *kgo.Record, err error) {
			if err != nil {
				fail("produce %s: %v", r.Value, err)
			}
		})
	}
	if err := producer.Flush(ctx); err != nil {
		fail("flush: %v", err)
	}
	producer.Close()

	var mu sync.Mutex
	seen := map[int]int{}
	last := map[int32]int64{}
	read := 0
	done := make(chan struct{})
	var once sync.Once
	consume := func(name string) {
		member, err := kgo.NewClient(kgo.SeedBrokers(seeds...), kgo.ConsumerGroup(topic+"-group"),
			kgo.ConsumeTopics(topic), kgo.ClientID(name), kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()))
		if err != nil {
			fail("consumer: %v", err)
		}
		defer member.Close()
		// A poll waits for records; the other member finishing ends it.
		pollCtx, stop := context.WithCancel(ctx)
		defer stop()
		go func() { <-done; stop() }()
		for {
			fetches := member.PollFetches(pollCtx)
			if pollCtx.Err() != nil {
				return
			}
			if errs := fetches.Errors(); len(errs) > 0 {
				fail("fetch: %v", errs)
			}
			mu.Lock()
			fetches.EachRecord(func(r *kgo.Record) {
				v, _ := strconv.Atoi(string(r.Value))
				seen[v]++
				if prev, ok := last[r.Partition]; ok && r.Offset <= prev {
					fail("partition %d went from offset %d to %d", r.Partition, prev, r.Offset)
				}
				last[r.Partition] = r.Offset
				read++
			})
			finished := read >= count
			mu.Unlock()
			if err := member.CommitUncommittedOffsets(ctx); err != nil {
				fail("commit: %v", err)
			}
			if finished {
				once.Do(func() { close(done) })
				return
			}
		}
	}
	var wg sync.WaitGroup
	for i := 0; i < 2; i++ {
		wg.Add(1)
		go func(name string) { defer wg.Done(); consume(name) }(fmt.Sprintf("franz-%d", i))
	}
	wg.Wait()
	for i := 0; i < count; i++ {
		if seen[i] != 1 {
			fail("record %d read %d times", i, seen[i])
		}
	}
	offsets, err := adm.FetchOffsets(ctx, topic+"-group")
	if err != nil {
		fail("fetch offsets: %v", err)
	}
	var committed int64
	offsets.Each(func(o kadm.OffsetResponse) { committed += o.At })
	out, _ := json.Marshal(map[string]any{"client": "franz-go", "produced": count, "read": read, "committed": committed})
	fmt.Println(string(out))
}
