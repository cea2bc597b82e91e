// Package learn reads the gateway's own Postfix delivery log: it finds the
// deliveries a backend refused after END OF DATA (Parse) and follows a log
// file across rotation as tail -F does (Follower).
//
// It knows the shape of Postfix's log lines and nothing of routes or
// verdicts: whether a refusal teaches anything is for its caller to say.
package learn
