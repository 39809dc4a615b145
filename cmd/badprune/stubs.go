package main

import "github.com/spf13/cobra"

func newFinetuneCmd(ios ioStreams) *cobra.Command {
	return &cobra.Command{Use: "finetune", Hidden: true}
}
