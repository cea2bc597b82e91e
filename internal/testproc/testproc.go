package testproc

import "os/exec"

// Proc is a started server process.
type Proc struct {
	Cmd  *exec.Cmd
	Done chan struct{} // closed when the process has exited and been reaped
	Err  error         // exit status, set before Done is closed
}

// Start starts cmd and reaps it when it exits.
func Start(cmd *exec.Cmd) (*Proc, error) {
	if err := startProcess(cmd); err != nil {
		return nil, err
	}
	p := &Proc{Cmd: cmd, Done: make(chan struct{})}
	go func() {
		p.Err = cmd.Wait()
		close(p.Done)
	}()
	return p, nil
}

// Pid is the process's id.
func (p *Proc) Pid() int { return p.Cmd.Process.Pid }

// Kill sends SIGKILL to the process's group and waits until it is reaped.
func (p *Proc) Kill() {
	killGroup(p.Pid())
	<-p.Done
}
