package config

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
)

// FromArgs parses the -config flag shared by pkgfleet's daemons, prints
// the settings table for -help, and loads the settings. It returns the
// remaining arguments.
func FromArgs(prog, usage string, args []string, stderr io.Writer) (*Config, []string, error) {
	fs := flag.NewFlagSet(prog, flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", os.Getenv("PKGFLEET_CONFIG"), "gcfg config `file` (env PKGFLEET_CONFIG)")
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", usage)
		fs.PrintDefaults()
		fmt.Fprintf(stderr, "\nSettings (in the config file as [Section] Key = value, or in the environment):\n")
		WriteHelp(stderr)
	}
	if err := fs.Parse(args); err != nil {
		return nil, nil, err
	}
	c, err := Load(Source{File: *file})
	if err != nil {
		return nil, nil, err
	}
	return c, fs.Args(), nil
}

// Logger is the process logger: text lines on stderr, one field per key.
func Logger(w io.Writer) *slog.Logger {
	level := slog.LevelInfo
	if os.Getenv("PKGFLEET_DEBUG") != "" {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}
