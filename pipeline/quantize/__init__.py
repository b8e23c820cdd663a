"""Quantization: conversion, calibration and range choosers, per-candidate selection, float islands,
number formats, per-layer diagnosis and the float-vs-quantized checks.
May import frontend and core (and targets, edgecore); never train, report or run."""
