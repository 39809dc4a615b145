package main

import "github.com/spf13/cobra"

func newPlotCmd(ios ioStreams) *cobra.Command     { return &cobra.Command{Use: "plot", Hidden: true} }
func newFinetuneCmd(ios ioStreams) *cobra.Command { return &cobra.Command{Use: "finetune", Hidden: true} }
