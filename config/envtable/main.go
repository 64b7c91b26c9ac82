// Command envtable writes config/environment.md, the table of every environment variable of
// every function (run by `go generate ./config`).
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/ocm-jobs/ocm-jobs/config"
)

func main() {
	out := flag.String("o", "environment.md", "file to write")
	flag.Parse()
	md, err := config.Markdown()
	if err == nil {
		err = os.WriteFile(*out, md, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "envtable:", err)
		os.Exit(1)
	}
}
