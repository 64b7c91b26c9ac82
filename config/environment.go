// Package config documents how ocm-jobs is configured: environment.md, the table of every
// environment variable of every function, is generated here from the functions' configuration
// structs (their envconfig, default and desc tags), so the documentation cannot drift from the
// code. `go generate ./config` rewrites it; the package's test fails when it is stale.
package config

import (
	"bytes"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"text/template"
	"time"

	"github.com/kelseyhightower/envconfig"

	function "github.com/ocm-jobs/ocm-jobs"
	sharedconfig "github.com/ocm-jobs/ocm-jobs/shared/config"
)

//go:generate go run ./envtable -o environment.md

// Variable is one environment variable and the functions that read it.
type Variable struct {
	Name        string
	Default     string
	Type        string
	Required    bool
	Description string
	// Functions read the variable, in the order of sharedconfig.Functions.
	Functions []string
}

// External are variables the k8s/ manifests set that something other than a function's
// Config reads (func-go, aws-sdk-go-v2), or that a Config will declare.
var External = []Variable{
	{
		Name: "LISTEN_ADDRESS", Type: "host:port", Default: "127.0.0.1:8080",
		Description: "address the image's HTTP server (func-go's scaffolding) listens on; unset, it falls back to 127.0.0.1:$PORT. The Knative Services set 0.0.0.0:8080 so the kubelet reaches the probes; `functions/serve` listens on PORT instead",
		Functions:   sharedconfig.Functions,
	},
	{
		Name: "KEYCLOAK_PUBLIC_KEY", Type: "string",
		Description: "base64 PKIX RS256 public key that bearer JWTs of the REST API are checked against (issue 4; from the Secret ocm-jobs-auth, key public-key)",
		Functions:   []string{sharedconfig.Jobs, sharedconfig.Incompliance},
	},
	{
		Name: "AWS_ACCESS_KEY_ID", Type: "string",
		Description: "object store access key, read by aws-sdk-go-v2's credential chain (from the Secret ocm-jobs-s3, key access-key-id)",
		Functions:   sharedconfig.Functions,
	},
	{
		Name: "AWS_SECRET_ACCESS_KEY", Type: "string",
		Description: "object store secret key, read by aws-sdk-go-v2's credential chain (from the Secret ocm-jobs-s3, key secret-access-key)",
		Functions:   sharedconfig.Functions,
	},
}

// Variables returns every variable the functions' configuration structs declare, by name. A
// variable declared by several functions must mean the same in each (same default, type and
// description); otherwise the table would lie for one of them, and that is an error.
func Variables() ([]Variable, error) {
	specs := function.ConfigSpecs()
	byName := map[string]*Variable{}
	for _, fn := range sharedconfig.Functions {
		spec, ok := specs[fn]
		if !ok {
			return nil, fmt.Errorf("function %s has no configuration struct in ConfigSpecs", fn)
		}
		vars, err := declared(spec)
		if err != nil {
			return nil, fmt.Errorf("function %s: %w", fn, err)
		}
		for _, v := range vars {
			have, ok := byName[v.Name]
			if !ok {
				v.Functions = []string{fn}
				byName[v.Name] = &v
				continue
			}
			if have.Default != v.Default || have.Type != v.Type || have.Description != v.Description || have.Required != v.Required {
				return nil, fmt.Errorf("%s is declared differently by %s and %s: give it one meaning or two names", v.Name, strings.Join(have.Functions, ", "), fn)
			}
			have.Functions = append(have.Functions, fn)
		}
	}
	if len(specs) != len(sharedconfig.Functions) {
		return nil, fmt.Errorf("ConfigSpecs has %d functions, shared/config lists %d", len(specs), len(sharedconfig.Functions))
	}
	out := make([]Variable, 0, len(byName))
	for _, v := range byName {
		out = append(out, *v)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// Undeclared returns the External variables no configuration struct declares: once a struct
// declares one, the struct's tags are what the table says about it.
func Undeclared(declared []Variable) []Variable {
	have := map[string]bool{}
	for _, v := range declared {
		have[v.Name] = true
	}
	var out []Variable
	for _, e := range External {
		if !have[e.Name] {
			out = append(out, e)
		}
	}
	return out
}

// declared lists the variables of one configuration struct as envconfig itself walks it
// (embedded structs, prefixes, the envconfig tag), so the names are the ones it reads.
func declared(spec any) ([]Variable, error) {
	var out []Variable
	collect := func(key string, field reflect.Value, tags reflect.StructTag) string {
		out = append(out, Variable{
			Name:        key,
			Default:     tags.Get("default"),
			Type:        typeName(field.Type()),
			Required:    tags.Get("required") == "true",
			Description: tags.Get("desc"),
		})
		return ""
	}
	tmpl := template.Must(template.New("vars").Funcs(template.FuncMap{"collect": collect}).
		Parse(`{{range .}}{{collect .Key .Field .Tags}}{{end}}`))
	if err := envconfig.Usaget("", spec, &bytes.Buffer{}, tmpl); err != nil {
		return nil, err
	}
	for _, v := range out {
		if v.Description == "" {
			return nil, fmt.Errorf("%s has no desc tag: say what it means", v.Name)
		}
	}
	return out, nil
}

func typeName(t reflect.Type) string {
	switch {
	case t == reflect.TypeOf(time.Duration(0)):
		return "duration"
	case t.Kind() == reflect.Bool:
		return "bool"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Uint64:
		return "integer"
	case t.Kind() == reflect.Float32 || t.Kind() == reflect.Float64:
		return "number"
	case t.Kind() == reflect.Slice:
		return "comma-separated " + typeName(t.Elem())
	case t.Kind() == reflect.Map:
		return "comma-separated key:value"
	default:
		return "string"
	}
}

// Markdown renders environment.md.
func Markdown() ([]byte, error) {
	vars, err := Variables()
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	b.WriteString("# Environment variables\n\n")
	b.WriteString("<!-- Generated by `go generate ./config` from the functions' configuration structs; do not edit. -->\n\n")
	b.WriteString("Every function is configured from its environment only. `FUNCTION` narrows a process (and\n")
	b.WriteString("each Knative Service in `k8s/`) to one function; without it a process serves all four and\n")
	b.WriteString("reads the union of the variables below.\n\n")
	b.WriteString("## Read by the functions\n\n")
	table(&b, vars)
	b.WriteString("\n## Set by the manifests, read outside the configuration structs\n\n")
	table(&b, Undeclared(vars))
	return b.Bytes(), nil
}

func table(b *bytes.Buffer, vars []Variable) {
	b.WriteString("| variable | default | type | functions | meaning |\n|---|---|---|---|---|\n")
	for _, v := range vars {
		def := "—"
		switch {
		case v.Required:
			def = "required"
		case v.Default != "":
			def = "`" + v.Default + "`"
		}
		fns := strings.Join(v.Functions, ", ")
		if len(v.Functions) == len(sharedconfig.Functions) {
			fns = "all"
		}
		fmt.Fprintf(b, "| `%s` | %s | %s | %s | %s |\n", v.Name, def, v.Type, fns, cell(v.Description))
	}
}

// cell keeps a description inside its table cell.
func cell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ").Replace(s)
}
