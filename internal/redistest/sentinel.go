package redistest

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"
)

// sentinelMaster is the name the sentinels monitor the master under.
const sentinelMaster = "calloutd-test"

// Sentinel is a master, one replica of it and three sentinels (quorum 2)
// that monitor it as "calloutd-test", all on loopback.
type Sentinel struct {
	// Master and Replica are the two data servers. Failover swaps them, so
	// that after it Master is the promoted server and Replica the former
	// master; a failover the test causes otherwise (killing the master)
	// leaves them as they were: ask CurrentMaster.
	Master  *Server
	Replica *Server
	// Sentinels are the three sentinels, redis-server in sentinel mode.
	Sentinels []*Server

	t testing.TB
}

// StartSentinel starts a master, one replica (replicaof master) and three
// sentinels (quorum 2, down-after-milliseconds 1000, failover-timeout 5000,
// parallel-syncs 1), each sentinel with a writable config file of its own.
// It waits until the replica is in sync (master_link_status:up) and every
// sentinel reports the master via SENTINEL GET-MASTER-ADDR-BY-NAME, sees it
// up, and knows the replica (num-slaves 1, the replica's link up) and the
// other sentinels (num-other-sentinels 2). Sentinels find each other through
// hello messages sent every 2 s, so this takes a few seconds.
func StartSentinel(t testing.TB) *Sentinel {
	t.Helper()
	Need(t)
	s := &Sentinel{t: t}
	// Either may become master; as one, it starts a full sync at once
	// rather than after the default 5 s wait for more replicas.
	data := []string{"repl-diskless-sync-delay 0"}
	s.Master = startServer(t, "sentinel master", modeRedis, data)
	s.Replica = startServer(t, "sentinel replica", modeRedis,
		append(data, fmt.Sprintf("replicaof 127.0.0.1 %d", s.Master.Port())))
	waitFor(t, waitLimit, "replica in sync with its master", []*Server{s.Master, s.Replica}, func() (bool, string) {
		return replicaInSync(s.Replica, s.Master)
	})

	for i := 1; i <= 3; i++ {
		sn := startServer(t, fmt.Sprintf("sentinel %d", i), modeSentinel, []string{
			fmt.Sprintf("sentinel monitor %s 127.0.0.1 %d 2", sentinelMaster, s.Master.Port()),
			fmt.Sprintf("sentinel down-after-milliseconds %s 1000", sentinelMaster),
			fmt.Sprintf("sentinel failover-timeout %s 5000", sentinelMaster),
			fmt.Sprintf("sentinel parallel-syncs %s 1", sentinelMaster),
		})
		s.Sentinels = append(s.Sentinels, sn)
	}
	waitFor(t, waitLimit, "sentinels agree on master, replica and each other", s.all(), func() (bool, string) {
		for _, sn := range s.Sentinels {
			if ok, status := sentinelReady(sn, s.Master.Addr(), s.Replica.Addr()); !ok {
				return false, sn.name + ": " + status
			}
		}
		return true, ""
	})
	return s
}

// MasterName returns the name the sentinels monitor the master under,
// "calloutd-test".
func (s *Sentinel) MasterName() string { return sentinelMaster }

// Addrs returns the addresses of the sentinels.
func (s *Sentinel) Addrs() []string {
	addrs := make([]string, len(s.Sentinels))
	for i, sn := range s.Sentinels {
		addrs[i] = sn.Addr()
	}
	return addrs
}

// CurrentMaster asks the sentinels, the first one that answers, for the
// master's address, and fails the test when none answers.
func (s *Sentinel) CurrentMaster() string {
	s.t.Helper()
	addr, err := s.currentMaster()
	if err != nil {
		s.t.Fatalf("redistest: asking the sentinels for the master: %v", err)
	}
	return addr
}

func (s *Sentinel) currentMaster() (string, error) {
	var errs []error
	for _, sn := range s.Sentinels {
		addr, err := masterAddr(sn)
		if err == nil {
			return addr, nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", sn.name, err))
	}
	return "", errors.Join(errs...)
}

// Failover forces a failover (SENTINEL FAILOVER on the first sentinel that
// accepts it) and waits, 20 s at most, until every running sentinel reports
// the other data server as master and that server reports role:master. It
// swaps Master and Replica and returns the new master's address. It takes
// about a second.
//
// It does not wait for the former master to be turned into a replica: the
// sentinels do that on their own about 10 s later (Redis 7.0 waits 8 s after
// it first sees the demoted server still claim to be a master, and polls
// replicas with INFO every 10 s). Until then the former master is a master
// too and takes writes from clients still connected to it, which are lost
// when it becomes a replica (the sentinels then also kill its client
// connections). So before it asks for a failover, Failover waits, 20 s at
// most, until the server to promote is a replica in sync with the current
// master: a second Failover soon after one takes some 10 s more.
func (s *Sentinel) Failover() string {
	s.t.Helper()
	cur := s.CurrentMaster()
	var from, to *Server
	switch cur {
	case s.Master.Addr():
		from, to = s.Master, s.Replica
	case s.Replica.Addr():
		from, to = s.Replica, s.Master
	default:
		s.t.Fatalf("redistest: the sentinels name %s as master, neither %s nor %s", cur, s.Master.Addr(), s.Replica.Addr())
	}

	// Promote only a replica in sync. Right after a failover the former
	// master is still a master: the sentinels turn it into a replica some
	// 10 s later, and a SENTINEL FAILOVER before that would "promote" a
	// server that is a master already and leave two masters.
	waitFor(s.t, waitLimit, to.Addr()+" replicating "+from.Addr()+" before a failover", s.all(), func() (bool, string) {
		return replicaInSync(to, from)
	})
	deadline := time.Now().Add(waitLimit)

	// The sentinels refuse while the replica does not look fit yet
	// (NOGOODSLAVE) or a failover runs (INPROG): try again until accepted.
	waitFor(s.t, time.Until(deadline), "a sentinel accepting SENTINEL FAILOVER", s.all(), func() (bool, string) {
		var errs []error
		for _, sn := range s.Sentinels {
			if !sn.running() {
				continue
			}
			_, err := call(sn.Addr(), "", "SENTINEL", "FAILOVER", sentinelMaster)
			if err == nil {
				return true, ""
			}
			errs = append(errs, fmt.Errorf("%s: %w", sn.name, err))
		}
		return false, fmt.Sprint(errors.Join(errs...))
	})

	waitFor(s.t, time.Until(deadline), "failover from "+from.Addr()+" to "+to.Addr(), s.all(), func() (bool, string) {
		for _, sn := range s.Sentinels {
			if !sn.running() {
				continue
			}
			addr, err := masterAddr(sn)
			if err != nil {
				return false, sn.name + ": " + err.Error()
			}
			if addr != to.Addr() {
				return false, sn.name + " reports master " + addr
			}
		}
		role, err := info(to.Addr(), to.pass, "replication", "role")
		if err != nil || role != "master" {
			return false, fmt.Sprintf("%s: role %q, error %v", to.Addr(), role, err)
		}
		return true, ""
	})
	s.Master, s.Replica = to, from
	return to.Addr()
}

func (s *Sentinel) all() []*Server {
	return append([]*Server{s.Master, s.Replica}, s.Sentinels...)
}

// masterAddr asks one sentinel for the master's address.
func masterAddr(sn *Server) (string, error) {
	v, err := call(sn.Addr(), "", "SENTINEL", "GET-MASTER-ADDR-BY-NAME", sentinelMaster)
	if err != nil {
		return "", err
	}
	return hostPort(v)
}

// replicaInSync reports whether replica is a replica of master with its
// link up.
func replicaInSync(replica, master *Server) (bool, string) {
	s, err := callString(replica.Addr(), replica.pass, "INFO", "replication")
	if err != nil {
		return false, err.Error()
	}
	role, host, port, link := infoField(s, "role"), infoField(s, "master_host"), infoField(s, "master_port"), infoField(s, "master_link_status")
	if role != "slave" || host != "127.0.0.1" || port != strconv.Itoa(master.Port()) || link != "up" {
		return false, fmt.Sprintf("%s: role:%s master_host:%s master_port:%s master_link_status:%s", replica.Addr(), role, host, port, link)
	}
	return true, ""
}

// sentinelReady reports whether sn names master, sees it up, and knows
// replica, with its link up, and two other sentinels.
func sentinelReady(sn *Server, master, replica string) (bool, string) {
	addr, err := masterAddr(sn)
	if err != nil {
		return false, err.Error()
	}
	if addr != master {
		return false, "master is " + addr
	}
	v, err := call(sn.Addr(), "", "SENTINEL", "MASTER", sentinelMaster)
	if err != nil {
		return false, err.Error()
	}
	m, err := pairs(v)
	if err != nil {
		return false, err.Error()
	}
	if m["flags"] != "master" || m["num-slaves"] != "1" || m["num-other-sentinels"] != "2" {
		return false, fmt.Sprintf("flags=%s num-slaves=%s num-other-sentinels=%s",
			m["flags"], m["num-slaves"], m["num-other-sentinels"])
	}
	v, err = call(sn.Addr(), "", "SENTINEL", "REPLICAS", sentinelMaster)
	if err != nil {
		return false, err.Error()
	}
	list, _ := v.([]any)
	if len(list) != 1 {
		return false, fmt.Sprintf("%d replicas listed", len(list))
	}
	r, err := pairs(list[0])
	if err != nil {
		return false, err.Error()
	}
	if r["flags"] != "slave" || r["master-link-status"] != "ok" {
		return false, fmt.Sprintf("replica %s:%s flags=%s master-link-status=%s",
			r["ip"], r["port"], r["flags"], r["master-link-status"])
	}
	if got := net.JoinHostPort(r["ip"], r["port"]); got != replica {
		return false, "replica listed is " + got
	}
	return true, ""
}
