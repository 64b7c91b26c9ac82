package polman

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"regexp"
	"sort"
	"strings"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/yaml"

	"github.com/ocm-jobs/ocm-jobs/shared/model"
)

// Templates is the Policy Manager's catalog of policy templates (fromTemplate, and a spec of
// type template) with the variables each needs: it renders them strictly, so a missing one
// fails the whole registration (and keeps the policies made before it).
var Templates = map[string][]string{
	"compss-under-allocation": {"compssTask", "thresholdTimeSeconds"},
	"cpu-usage-host":          {"maxCpuUsagePercent"},
	"app-host-cpu-usage":      {"maxCpu"},
	"app-sca-score":           {"threshold"},
}

// builtinVariables are what the Policy Manager itself gives a telemetry expression.
var builtinVariables = map[string]bool{"subject": true, "subject_label_selector": true, "subject_label_list": true}

// securityLevels are the levels of a security policy (thresholds 0, 34, 67 of app-sca-score).
var securityLevels = []string{"low", "medium", "high"}

var (
	// promDuration is a Prometheus duration (interval, pendingInterval).
	promDuration = regexp.MustCompile(`^([0-9]+(ms|s|m|h|d|w|y))+$`)
	// templateRef finds the variables a Jinja expression starts with: {{ name … }}.
	templateRef = regexp.MustCompile(`\{\{\{?\s*([A-Za-z_][A-Za-z0-9_]*)`)
)

// ValidateDescriptor checks the `policies` of an application descriptor, at the top level and
// per component, as the Policy Manager reads them (the first document with both name and
// components): every problem, with its path (policies[0].spec.type,
// components[1].policies[0].threshold). A descriptor with no such document, or no policies,
// is fine. Policies of types the Policy Manager does not know are left alone: it discards them.
func ValidateDescriptor(data []byte) *apis.FieldError {
	if !bytes.Contains(data, []byte("polic")) && !bytes.Contains(data, []byte("security")) {
		return nil // the common case, without parsing the descriptor a second time
	}
	doc, err := icosDocument(data)
	if err != nil || doc == nil {
		return nil // the descriptor's own parser says what is wrong with it
	}
	return ValidatePolicies(doc)
}

// Registrable reports whether the Policy Manager can read the descriptor: it has a document
// with both name and components (a plain multi-document YAML of Kubernetes objects has not).
func Registrable(data []byte) bool {
	doc, err := icosDocument(data)
	return err == nil && doc != nil
}

// icosDocument is the first document with both name and components.
func icosDocument(data []byte) (map[string]any, error) {
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		raw, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var doc map[string]any
		if yaml.Unmarshal(raw, &doc) != nil || doc == nil {
			continue
		}
		_, named := doc["name"]
		_, comps := doc["components"]
		if named && comps {
			return doc, nil
		}
	}
}

// ValidatePolicies checks the policies of a parsed ICOS descriptor (see ValidateDescriptor).
func ValidatePolicies(doc map[string]any) *apis.FieldError {
	comps, _ := doc["components"].([]any)
	names := map[string]bool{}
	for _, c := range comps {
		if m, ok := c.(map[string]any); ok {
			if n, ok := m["name"].(string); ok {
				names[n] = true
			}
		}
	}
	errs := policyList(doc["policies"], names).ViaField("policies")
	if p, ok := doc["policies"]; ok && p != nil {
		if _, isList := p.([]any); !isList {
			errs = apis.ErrInvalidValue(kindOf(p), "policies", "want a list of policies")
		}
	}
	for i, c := range comps {
		m, ok := c.(map[string]any)
		if !ok {
			continue
		}
		p, ok := m["policies"]
		if !ok || p == nil {
			continue
		}
		if _, isList := p.([]any); !isList {
			errs = errs.Also(apis.ErrInvalidValue(kindOf(p), "policies", "want a list of policies").ViaFieldIndex("components", i))
			continue
		}
		errs = errs.Also(policyList(p, names).ViaField("policies").ViaFieldIndex("components", i))
	}
	return errs
}

func policyList(v any, components map[string]bool) *apis.FieldError {
	list, _ := v.([]any)
	var errs *apis.FieldError
	for i, p := range list {
		errs = errs.Also(Policy(p, components).ViaIndex(i))
	}
	return errs
}

// Policy checks one policy item; components are the descriptor's component names (what
// apply-to may name).
func Policy(v any, components map[string]bool) *apis.FieldError {
	m, ok := v.(map[string]any)
	if !ok {
		return apis.ErrInvalidValue(kindOf(v), apis.CurrentField, "a policy is a mapping")
	}
	var errs *apis.FieldError
	typ, hasType := m["type"]
	kind, isString := typ.(string)
	if hasType && !isString {
		return apis.ErrInvalidValue(kindOf(typ), "type", "want custom or security")
	}
	_, short := m["security"]
	_, hasLevel := m["level"]
	_, hasThreshold := m["threshold"]
	_, hasTemplate := m["fromTemplate"]
	_, hasSpec := m["spec"]
	switch {
	case short:
		if hasType && kind != "security" {
			return apis.ErrGeneric(fmt.Sprintf("the security shorthand is a security policy, not type %q", kind), "security", "type")
		}
		if hasLevel || hasThreshold {
			errs = errs.Also(apis.ErrGeneric("either the shorthand security or level/threshold, not both", "security"))
		}
		errs = errs.Also(oneOf(m["security"], "security", securityLevels))
		kind = "security-short"
	case !hasType && (hasTemplate || hasSpec):
		kind = "custom"
	case !hasType && (hasLevel || hasThreshold):
		kind = "security"
	case !hasType:
		return &apis.FieldError{Message: "missing field(s)", Paths: []string{"type"},
			Details: "want type custom (with fromTemplate or spec) or security (with level or threshold), or the shorthand security: low|medium|high"}
	}
	switch kind {
	case "custom":
		errs = errs.Also(custom(m))
	case "security":
		errs = errs.Also(security(m))
	case "security-short":
	default:
		return nil // not a Policy Manager policy: it discards it
	}
	return errs.Also(common(m, components))
}

// custom checks a custom policy: a template from the catalog, or a spec.
func custom(m map[string]any) *apis.FieldError {
	tmpl, hasTemplate := m["fromTemplate"]
	spec, hasSpec := m["spec"]
	vars, _ := m["variables"].(map[string]any)
	switch {
	case hasTemplate && hasSpec:
		return apis.ErrMultipleOneOf("fromTemplate", "spec")
	case hasTemplate:
		return template(tmpl, "fromTemplate", vars)
	case hasSpec:
		return specOf(spec, vars).ViaField("spec")
	}
	return apis.ErrMissingOneOf("fromTemplate", "spec")
}

// template checks a template name and that the policy's variables give what it needs.
func template(v any, field string, vars map[string]any) *apis.FieldError {
	name, ok := v.(string)
	if !ok || name == "" {
		return apis.ErrInvalidValue(kindOf(v), field, "want the name of a template: one of "+strings.Join(templateNames(), ", "))
	}
	need, ok := Templates[name]
	if !ok {
		return apis.ErrInvalidValue(name, field, "not in the Policy Manager's catalog: one of "+strings.Join(templateNames(), ", "))
	}
	var errs *apis.FieldError
	for _, n := range need {
		if _, set := vars[n]; !set {
			errs = errs.Also(&apis.FieldError{Message: fmt.Sprintf("template %s needs variable %s", name, n), Paths: []string{"variables." + n}})
		}
	}
	return errs
}

func templateNames() []string {
	out := make([]string, 0, len(Templates))
	for n := range Templates {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// specOf checks a spec: telemetryQuery (expr, violatedIf, thresholds), template
// (templateName), constraints.
func specOf(v any, vars map[string]any) *apis.FieldError {
	m, ok := v.(map[string]any)
	if !ok {
		return apis.ErrInvalidValue(kindOf(v), apis.CurrentField, "a spec is a mapping with a type: telemetryQuery, template or constraints")
	}
	errs := optionalString(m, "description")
	switch t := m["type"]; t {
	case "telemetryQuery":
		expr, ok := m["expr"].(string)
		if !ok || strings.TrimSpace(expr) == "" {
			errs = errs.Also(apis.ErrMissingField("expr"))
		}
		errs = errs.Also(optionalString(m, "violatedIf"))
		violated, _ := m["violatedIf"].(string)
		for _, f := range []struct{ field, text string }{{"expr", expr}, {"violatedIf", violated}} {
			for _, ref := range templateRef.FindAllStringSubmatch(f.text, -1) {
				if _, set := vars[ref[1]]; !set && !builtinVariables[ref[1]] {
					errs = errs.Also(apis.ErrGeneric(fmt.Sprintf("uses variable %s, which the policy's variables do not set", ref[1]), f.field))
				}
			}
		}
		if th, ok := m["thresholds"]; ok && th != nil {
			tm, ok := th.(map[string]any)
			if !ok {
				errs = errs.Also(apis.ErrInvalidValue(kindOf(th), "thresholds", "want a mapping of names to numbers"))
			}
			for k, x := range tm {
				if _, isNum := x.(float64); !isNum {
					errs = errs.Also(apis.ErrInvalidValue(kindOf(x), "thresholds."+k, "want a number"))
				}
			}
		}
	case "template":
		errs = errs.Also(template(m["templateName"], "templateName", vars))
	case "constraints":
		c, ok := m["constraints"].(map[string]any)
		if !ok {
			errs = errs.Also(apis.ErrMissingField("constraints"))
		}
		for k, x := range c {
			if _, isString := x.(string); !isString {
				errs = errs.Also(apis.ErrInvalidValue(kindOf(x), "constraints."+k, "want a string"))
			}
		}
	case nil:
		errs = errs.Also(apis.ErrMissingField("type"))
	default:
		errs = errs.Also(apis.ErrInvalidValue(fmt.Sprint(t), "type", "want telemetryQuery, template or constraints"))
	}
	return errs
}

// security checks a policy of type security: level or threshold, not both.
func security(m map[string]any) *apis.FieldError {
	level, hasLevel := m["level"]
	th, hasThreshold := m["threshold"]
	switch {
	case hasLevel && hasThreshold:
		return apis.ErrMultipleOneOf("level", "threshold")
	case hasLevel:
		return oneOf(level, "level", securityLevels)
	case hasThreshold:
		if f, ok := th.(float64); !ok || f != math.Trunc(f) || f < 0 {
			return apis.ErrInvalidValue(kindOf(th), "threshold", "want a whole number (the lowest acceptable security score)")
		}
		return nil
	}
	return apis.ErrMissingOneOf("level", "threshold")
}

// common checks what every Policy Manager policy may carry: name, apply-to, remediation,
// variables, properties.
func common(m map[string]any, components map[string]bool) *apis.FieldError {
	errs := optionalString(m, "name")
	if v, ok := m["apply-to"]; ok && v != nil {
		var names []any
		switch x := v.(type) {
		case string:
			names = []any{x}
		case []any:
			names = x
		default:
			errs = errs.Also(apis.ErrInvalidValue(kindOf(v), "apply-to", "want a component name or a list of them"))
		}
		for i, n := range names {
			path := "apply-to"
			if _, isList := v.([]any); isList {
				path = fmt.Sprintf("apply-to[%d]", i)
			}
			s, ok := n.(string)
			switch {
			case !ok:
				errs = errs.Also(apis.ErrInvalidValue(kindOf(n), path, "want a component name"))
			case !components[s]:
				errs = errs.Also(apis.ErrInvalidValue(s, path, "not a component of this application"))
			}
		}
	}
	if v, ok := m["remediation"]; ok && v != nil {
		s, ok := v.(string)
		if !ok || !model.SubType(s).ValidRemediation() {
			errs = errs.Also(apis.ErrInvalidValue(fmt.Sprint(v), "remediation", fmt.Sprintf("want one of %v", model.Remediations)))
		}
	}
	if v, ok := m["variables"]; ok && v != nil {
		vm, ok := v.(map[string]any)
		if !ok {
			errs = errs.Also(apis.ErrInvalidValue(kindOf(v), "variables", "want a mapping of names to numbers or strings"))
		}
		for k, x := range vm {
			switch x.(type) {
			case string, float64:
			default:
				errs = errs.Also(apis.ErrInvalidValue(kindOf(x), "variables."+k, "want a number or a string"))
			}
		}
	}
	if v, ok := m["properties"]; ok && v != nil {
		pm, ok := v.(map[string]any)
		if !ok {
			return errs.Also(apis.ErrInvalidValue(kindOf(v), "properties", "want a mapping: oneoff, interval, pendingInterval"))
		}
		if x, ok := pm["oneoff"]; ok {
			if _, isBool := x.(bool); !isBool {
				errs = errs.Also(apis.ErrInvalidValue(kindOf(x), "properties.oneoff", "want true or false"))
			}
		}
		for _, k := range []string{"interval", "pendingInterval"} {
			if x, ok := pm[k]; ok {
				if s, isString := x.(string); !isString || !promDuration.MatchString(s) {
					errs = errs.Also(apis.ErrInvalidValue(fmt.Sprint(x), "properties."+k, "want a duration such as 30s, 5m or 1h"))
				}
			}
		}
	}
	return errs
}

func oneOf(v any, field string, allowed []string) *apis.FieldError {
	s, _ := v.(string)
	for _, a := range allowed {
		if s == a {
			return nil
		}
	}
	return apis.ErrInvalidValue(fmt.Sprint(v), field, "want one of "+strings.Join(allowed, ", "))
}

func optionalString(m map[string]any, field string) *apis.FieldError {
	if v, ok := m[field]; ok && v != nil {
		if _, isString := v.(string); !isString {
			return apis.ErrInvalidValue(kindOf(v), field, "want a string")
		}
	}
	return nil
}

// kindOf describes a value in an error without quoting a whole structure.
func kindOf(v any) string {
	switch x := v.(type) {
	case map[string]any:
		return "a mapping"
	case []any:
		return "a list"
	case nil:
		return "nothing"
	case string:
		return x
	default:
		return fmt.Sprint(x)
	}
}
