package callout

import (
	"net"
	"syscall"
)

// quiet tells whether nothing is waiting to be read on c and the peer has
// not closed it, without reading or blocking (recv with MSG_PEEK and
// MSG_DONTWAIT). A connection it cannot look into counts as quiet.
func quiet(c net.Conn) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return true
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return true
	}
	var b [1]byte
	var rerr error
	if err := rc.Read(func(fd uintptr) bool {
		_, _, rerr = syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // done either way: never wait
	}); err != nil {
		return false
	}
	switch {
	case rerr == syscall.EAGAIN || rerr == syscall.EWOULDBLOCK:
		return true // nothing to read: fit
	case rerr != nil:
		return false
	}
	return false // a byte waits (the server spoke), or 0 bytes: it closed
}
