package polman

import (
	"strings"
	"testing"
)

// descriptor is an ICOS descriptor with two components and the given policies: top-level
// ones, and the second component's.
func descriptor(top, component string) string {
	return `name: shop
description: a shop
components:
- name: web
  type: manifest
  manifests: [{name: web}]
- name: db
  type: manifest
  manifests: [{name: db}]
` + component + `
manifests: []
` + top
}

func TestValidateDescriptor(t *testing.T) {
	tests := map[string]struct {
		top, component string
		// paths are the paths the error must name; none: valid.
		paths []string
	}{
		"no policies": {},
		"a template with its variables": {top: `policies:
- name: cpu
  type: custom
  fromTemplate: app-host-cpu-usage
  variables: {maxCpu: 0.8}
  remediation: scale-out
  apply-to: [web, db]
  properties: {oneoff: false, interval: 30s, pendingInterval: 1m}`},
		"a telemetry spec using its variables": {top: `policies:
- spec:
    type: telemetryQuery
    expr: 'rate(x{ {{subject_label_selector}} }[1m])'
    violatedIf: '> {{ limit }}'
    thresholds: {warning: 1, critical: 2.5}
  variables: {limit: 3}`},
		"a template spec and a constraints spec": {top: `policies:
- {type: custom, spec: {type: template, templateName: cpu-usage-host}, variables: {maxCpuUsagePercent: 90}}
- {type: custom, spec: {type: constraints, constraints: {region: eu}}}`},
		"security, every spelling": {top: `policies:
- security: high
- {type: security, level: low, remediation: redeploy}
- {type: security, threshold: 40}
- {threshold: 50}`},
		"remediations of the Policy Manager": {top: `policies:
- {fromTemplate: cpu-usage-host, variables: {maxCpuUsagePercent: 90}, remediation: none}
- {fromTemplate: cpu-usage-host, variables: {maxCpuUsagePercent: 90}, remediation: migrate}`},
		"a type the Policy Manager discards": {top: `policies:
- {type: user-preference, whatever: [1, 2]}`},
		"a component's policy": {component: `  policies:
  - {type: custom, fromTemplate: app-sca-score, variables: {threshold: 50}, apply-to: db}`},

		"a spec of an unknown type": {top: `policies:
- {type: custom, spec: {type: promql, expr: up}}`, paths: []string{"policies[0].spec.type"}},
		"a spec without a type": {top: `policies:
- {type: custom, spec: {expr: up}}`, paths: []string{"policies[0].spec.type"}},
		"a telemetry spec without expr": {top: `policies:
- {type: custom, spec: {type: telemetryQuery}}`, paths: []string{"policies[0].spec.expr"}},
		"a variable the policy does not set": {top: `policies:
- {type: custom, spec: {type: telemetryQuery, expr: 'x > {{max}}'}}`, paths: []string{"policies[0].spec.expr"}},
		"a threshold that is not a number": {top: `policies:
- {type: custom, spec: {type: telemetryQuery, expr: up, thresholds: {warning: high}}}`, paths: []string{"policies[0].spec.thresholds.warning"}},
		"level and threshold": {component: `  policies:
  - {type: security, level: high, threshold: 10}`, paths: []string{"components[1].policies[0].level", "components[1].policies[0].threshold"}},
		"a threshold that is not a whole number": {component: `  policies:
  - {type: security, threshold: 1.5}`, paths: []string{"components[1].policies[0].threshold"}},
		"an unknown level": {top: `policies:
- {type: security, level: extreme}`, paths: []string{"policies[0].level"}},
		"the shorthand with an unknown level": {top: `policies:
- {security: maximal}`, paths: []string{"policies[0].security"}},
		"the shorthand with level": {top: `policies:
- {security: high, level: low}`, paths: []string{"policies[0].security"}},
		"custom with neither template nor spec": {top: `policies:
- {type: custom}`, paths: []string{"policies[0].fromTemplate", "policies[0].spec"}},
		"custom with both": {top: `policies:
- {type: custom, fromTemplate: cpu-usage-host, spec: {type: template, templateName: cpu-usage-host}}`, paths: []string{"policies[0].fromTemplate", "policies[0].spec"}},
		"a template not in the catalog": {top: `policies:
- {fromTemplate: memory-usage}`, paths: []string{"policies[0].fromTemplate"}},
		"a template without its variable": {top: `policies:
- {fromTemplate: compss-under-allocation, variables: {compssTask: t}}`, paths: []string{"policies[0].variables.thresholdTimeSeconds"}},
		"no type at all": {top: `policies:
- {name: cpu}`, paths: []string{"policies[0].type"}},
		"apply-to a stranger": {top: `policies:
- {security: low, apply-to: [web, cache]}`, paths: []string{"policies[0].apply-to[1]"}},
		"an unknown remediation": {top: `policies:
- {security: low, remediation: reboot}`, paths: []string{"policies[0].remediation"}},
		"bad properties": {top: `policies:
- {security: low, properties: {oneoff: yes-please, pendingInterval: soon}}`, paths: []string{"policies[0].properties.oneoff", "policies[0].properties.pendingInterval"}},
		"a variable that is a list": {top: `policies:
- {security: low, variables: {x: [1]}}`, paths: []string{"policies[0].variables.x"}},
		"policies that are not a list":   {top: `policies: {security: low}`, paths: []string{"policies"}},
		"a policy that is not a mapping": {component: `  policies: [high]`, paths: []string{"components[1].policies[0]"}},
		"every problem at once": {top: `policies:
- {type: custom, spec: {type: nope}}
- {security: maximal}`, component: `  policies:
  - {type: security, level: high, threshold: 10}`, paths: []string{"policies[0].spec.type", "policies[1].security", "components[1].policies[0].level"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := ValidateDescriptor([]byte(descriptor(tc.top, tc.component)))
			if len(tc.paths) == 0 {
				if err != nil {
					t.Fatalf("want valid, got %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("want errors at %v, got none", tc.paths)
			}
			msg := err.Error()
			for _, p := range tc.paths {
				if !strings.Contains(msg, p) {
					t.Errorf("error does not name %s: %v", p, msg)
				}
			}
		})
	}
}

// TestValidateDescriptorIgnoresWhatThePolicyManagerIgnores: plain multi-document
// descriptors, and JSON, are read as the Policy Manager reads them.
func TestValidateDescriptorIgnoresWhatThePolicyManagerIgnores(t *testing.T) {
	plain := "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: policies}\n---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n"
	if err := ValidateDescriptor([]byte(plain)); err != nil {
		t.Errorf("plain descriptor: %v", err)
	}
	if Registrable([]byte(plain)) || !Registrable([]byte(descriptor("", ""))) {
		t.Error("only ICOS descriptors are registrable")
	}
	js := `{"name": "a", "components": [{"name": "c"}], "policies": [{"type": "custom", "spec": {"type": "x"}}]}`
	if err := ValidateDescriptor([]byte(js)); err == nil || !strings.Contains(err.Error(), "policies[0].spec.type") {
		t.Errorf("JSON descriptor: %v", err)
	}
}
