// Package logs builds the zap logger a process carries in its context (knative.dev/pkg
// logging), at the level LOG_LEVEL names.
package logs

import (
	"fmt"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// New returns a JSON logger at level (debug, info, warn, error), named after the process.
func New(level, name string) (*zap.SugaredLogger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("LOG_LEVEL=%q: %w", level, err)
	}
	cfg := zap.NewProductionConfig()
	cfg.Level = zap.NewAtomicLevelAt(lvl)
	cfg.EncoderConfig.TimeKey = "ts"
	cfg.EncoderConfig.EncodeTime = zapcore.ISO8601TimeEncoder
	cfg.Sampling = nil
	l, err := cfg.Build()
	if err != nil {
		return nil, err
	}
	return l.Named(name).Sugar(), nil
}
