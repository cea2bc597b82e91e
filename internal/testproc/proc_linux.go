package testproc

import (
	"os/exec"
	"runtime"
	"sync"
	"syscall"
)

// On Linux a server also gets SIGKILL when the test binary dies (a test
// timeout exits without running t.Cleanup). The kernel sends that signal
// when the thread that started the child ends, not the process, and the Go
// runtime may end threads; so every server is started from one goroutine
// locked to its thread for good, a thread that lives as long as the process.

type spawnReq struct {
	cmd  *exec.Cmd
	errc chan error
}

var (
	spawnOnce sync.Once
	spawnc    chan spawnReq
)

func startProcess(cmd *exec.Cmd) error {
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Setpgid:   true, // its own group, so killGroup reaches what it forks
		Pdeathsig: syscall.SIGKILL,
	}
	spawnOnce.Do(func() {
		spawnc = make(chan spawnReq)
		go func() {
			runtime.LockOSThread() // never unlocked, and the goroutine never returns
			for req := range spawnc {
				req.errc <- req.cmd.Start()
			}
		}()
	})
	errc := make(chan error, 1)
	spawnc <- spawnReq{cmd, errc}
	return <-errc
}

// killGroup sends SIGKILL to the process group led by pid.
func killGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}
