// Package daemon wires calloutd together: it turns a policy request into a
// cached or fresh callout verdict and the verdict into the action Postfix
// gets (decide.go is the one place that mapping lives), and runs the
// listeners from the configuration.
package daemon
