#!/usr/bin/env bash
# Placeholder: the real demo is written separately.
echo "demo: TODO"
