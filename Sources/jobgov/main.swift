import JobgovCLI

JobgovEntry.main()
