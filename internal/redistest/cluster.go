package redistest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// numSlots is the number of hash slots of a Redis Cluster.
const numSlots = 16384

// Cluster is a Redis Cluster of three masters without replicas, on loopback.
type Cluster struct {
	// Nodes are the three masters, each owning about a third of the slots.
	Nodes []*Server

	t testing.TB
}

// StartCluster starts three cluster-enabled instances (cluster-node-timeout
// 2000, each on a port P whose bus port P+10000 was free too), creates the
// cluster with `redis-cli --cluster create ... --cluster-replicas 0`, and
// waits until every node reports cluster_state:ok, knows the three nodes
// connected, and agrees with the others on which node owns each of the
// 16384 slots (CLUSTER SLOTS).
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	Need(t)
	c := &Cluster{t: t}
	for i := 1; i <= 3; i++ {
		c.Nodes = append(c.Nodes, startServer(t, fmt.Sprintf("cluster node %d", i), modeCluster, nil))
	}

	args := append([]string{"--cluster", "create"}, c.Addrs()...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "redis-cli", args...)
	cmd.Env = cliEnv()
	cmd.WaitDelay = waitLimit
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		var tails strings.Builder
		for _, n := range c.Nodes {
			tails.WriteString(n.logTail())
		}
		t.Fatalf("redistest: redis-cli %s: %v\n%s%s", strings.Join(args, " "), err, out.String(), tails.String())
	}

	waitFor(t, waitLimit, "cluster state ok on every node, slots agreed", c.Nodes, func() (bool, string) {
		var first []int
		for _, n := range c.Nodes {
			if ok, status := clusterNodeReady(n); !ok {
				return false, n.name + ": " + status
			}
			owners, err := slotOwners(n)
			if err != nil {
				return false, n.name + ": " + err.Error()
			}
			if first == nil {
				first = owners
			} else if !slices.Equal(first, owners) {
				return false, n.name + " disagrees with " + c.Nodes[0].name + " on slot owners"
			}
		}
		return true, ""
	})
	return c
}

// Addrs returns the addresses of the nodes.
func (c *Cluster) Addrs() []string {
	addrs := make([]string, len(c.Nodes))
	for i, n := range c.Nodes {
		addrs[i] = n.Addr()
	}
	return addrs
}

// NodeFor returns the node that owns the hash slot of key, hash tags
// honoured, as CLUSTER SLOTS on the first node that answers tells it now.
// It fails the test when no node answers or the owner is not one of Nodes.
func (c *Cluster) NodeFor(key string) *Server {
	c.t.Helper()
	slot := keySlot(key)
	var errs []error
	for _, n := range c.Nodes {
		owners, err := slotOwners(n)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", n.name, err))
			continue
		}
		for _, o := range c.Nodes {
			if o.Port() == owners[slot] {
				return o
			}
		}
		c.t.Fatalf("redistest: slot %d of key %q is owned by port %d, no node of the cluster", slot, key, owners[slot])
	}
	c.t.Fatalf("redistest: no node tells the owner of slot %d of key %q: %v", slot, key, errors.Join(errs...))
	return nil
}

// keySlot returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of the
// key, or of its hash tag (what lies between the first "{" and the next "}"
// when that is not empty), modulo 16384.
func keySlot(key string) int {
	if open := strings.IndexByte(key, '{'); open >= 0 {
		if end := strings.IndexByte(key[open+1:], '}'); end > 0 {
			key = key[open+1 : open+1+end]
		}
	}
	return int(crc16(key) % numSlots)
}

// crc16 is CRC-16/XMODEM: polynomial 0x1021, initial value 0, no reflection.
func crc16(s string) uint16 {
	var crc uint16
	for i := 0; i < len(s); i++ {
		crc ^= uint16(s[i]) << 8
		for range 8 {
			if crc&0x8000 != 0 {
				crc = crc<<1 ^ 0x1021
			} else {
				crc <<= 1
			}
		}
	}
	return crc
}

// clusterNodeReady reports whether n says the cluster is ok with all slots
// served, and knows three nodes, all connected and none failing.
func clusterNodeReady(n *Server) (bool, string) {
	ci, err := callString(n.Addr(), n.pass, "CLUSTER", "INFO")
	if err != nil {
		return false, err.Error()
	}
	for field, want := range map[string]string{
		"cluster_state":          "ok",
		"cluster_slots_ok":       strconv.Itoa(numSlots),
		"cluster_known_nodes":    "3",
		"cluster_size":           "3",
		"cluster_slots_pfail":    "0",
		"cluster_slots_fail":     "0",
		"cluster_slots_assigned": strconv.Itoa(numSlots),
	} {
		if got := infoField(ci, field); got != want {
			return false, field + ":" + got
		}
	}
	nodes, err := callString(n.Addr(), n.pass, "CLUSTER", "NODES")
	if err != nil {
		return false, err.Error()
	}
	for line := range strings.SplitSeq(strings.TrimSpace(nodes), "\n") {
		// <id> <ip:port@bus> <flags> <master> <ping> <pong> <epoch> <link> <slots>...
		f := strings.Fields(line)
		if len(f) < 8 || strings.Contains(f[2], "fail") || strings.Contains(f[2], "handshake") ||
			strings.Contains(f[2], "noaddr") || f[7] != "connected" {
			return false, "CLUSTER NODES line " + line
		}
	}
	return true, ""
}

// slotOwners returns, for every slot, the port of the node that owns it as n
// reports with CLUSTER SLOTS; an error if a slot has no owner.
func slotOwners(n *Server) ([]int, error) {
	v, err := call(n.Addr(), n.pass, "CLUSTER", "SLOTS")
	if err != nil {
		return nil, err
	}
	ranges, ok := v.([]any)
	if !ok {
		return nil, fmt.Errorf("CLUSTER SLOTS reply is %T", v)
	}
	owners := make([]int, numSlots)
	for _, r := range ranges {
		// [start end [ip port id ...] replicas...]
		e, ok := r.([]any)
		if !ok || len(e) < 3 {
			return nil, fmt.Errorf("CLUSTER SLOTS entry %v", r)
		}
		start, ok1 := e[0].(int64)
		end, ok2 := e[1].(int64)
		master, ok3 := e[2].([]any)
		if !ok1 || !ok2 || !ok3 || len(master) < 2 || start < 0 || end >= numSlots || start > end {
			return nil, fmt.Errorf("CLUSTER SLOTS entry %v", r)
		}
		port, ok := master[1].(int64)
		if !ok || master[0] != "127.0.0.1" {
			return nil, fmt.Errorf("CLUSTER SLOTS entry %v: master not on 127.0.0.1", r)
		}
		for slot := start; slot <= end; slot++ {
			owners[slot] = int(port)
		}
	}
	if i := slices.Index(owners, 0); i >= 0 {
		return nil, fmt.Errorf("CLUSTER SLOTS: slot %d has no owner", i)
	}
	return owners, nil
}
