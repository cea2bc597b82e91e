//go:build unix && !linux

package testproc

import (
	"os/exec"
	"syscall"
)

func startProcess(cmd *exec.Cmd) error {
	// Its own group, so killGroup reaches what it forks.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	return cmd.Start()
}

// killGroup sends SIGKILL to the process group led by pid.
func killGroup(pid int) {
	_ = syscall.Kill(-pid, syscall.SIGKILL)
}
