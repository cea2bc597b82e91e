package learn

import "sync"

// RecentMessages is how many messages' recipient counts a Recipients
// keeps: some minutes of a busy gateway's mail, between a message entering
// the active queue and its delivery being refused.
const RecentMessages = 1 << 14

// Recipients remembers how many recipients recent messages had, from
// qmgr's "nrcpt=" lines (Queued), the oldest forgotten first. Its zero
// value is ready; it is safe for concurrent use.
type Recipients struct {
	mu    sync.Mutex
	n     map[string]int
	order [RecentMessages]string
	next  int
}

// Note reads line as qmgr's and remembers its count; false when line is
// not qmgr's.
func (r *Recipients) Note(line string) bool {
	id, n, ok := Queued(line)
	if !ok {
		return false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.n == nil {
		r.n = make(map[string]int)
	}
	if _, seen := r.n[id]; !seen {
		delete(r.n, r.order[r.next])
		r.order[r.next] = id
		r.next = (r.next + 1) % RecentMessages
	}
	r.n[id] = n
	return true
}

// Count is how many recipients the message id had; 0 when its line was
// not read (or is forgotten).
func (r *Recipients) Count(id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.n[id]
}
